"""Crosscoder training throughput (issue 18): activation pairs per second through kdlens's training
(:func:`kdlens.distill.crosscoder.train`: the training loop, its schedule, checkpoint and progress machinery) against
a plain PyTorch loop of the same model and loss (AdamW, no schedule, no checkpoint), on the same random pairs, in
one process. BatchTopK, 8x expansion, k = 32, batch 1,024.

    .venv/bin/python benchmarks/bench_crosscoder.py                 # d = 128 (the lab) and 576 (SmolLM2)
    .venv/bin/python benchmarks/bench_crosscoder.py --pairs 50000 --widths 128

Target: 1,000,000 pairs at d = 128 in under 5 minutes (printed as the time 1M pairs take at the measured rate).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from kdlens.distill import crosscoder as C
from kdlens.distill.config import TrainConfig

TARGET_S = 300.0


def plain(pairs: list[torch.Tensor], n_latents: int, k: int, batch: int, lr: float) -> float:
    """Seconds for one epoch of a bare loop over ``pairs``."""
    model = C.Crosscoder([p.shape[1] for p in pairs], n_latents, "batchtopk", k).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order = torch.randperm(pairs[0].shape[0], generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    for lo in range(0, len(order) - batch + 1, batch):
        index = order[lo:lo + batch]
        loss, _ = C.batchtopk_loss(model, [p[index] for p in pairs])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 576])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch, k = 1024, 32
    for d in args.widths:
        g = torch.Generator().manual_seed(0)
        pairs = [torch.randn(args.pairs, d, generator=g) for _ in range(2)]
        n = (args.pairs // batch) * batch
        floor_s = plain(pairs, 8 * d, k, batch, 1e-3)
        config = TrainConfig(epochs=1, batch_size=batch, lr=1e-3, weight_decay=0.0, progress=False, drop_last=True)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            C.train(pairs, 8 * d, tmp, config, k=k)
            ours_s = time.perf_counter() - started
        rate, floor_rate = n / ours_s, n / floor_s
        line = (f"d = {d}, {8 * d} latents, k = {k}, {n} pairs, {args.threads} threads: kdlens {rate:,.0f} pairs/s, "
                f"plain loop {floor_rate:,.0f} pairs/s ({ours_s / floor_s:.2f}x its time); 1M pairs in "
                f"{1e6 / rate:.0f} s")
        if d == 128:
            line += f" (target < {TARGET_S:.0f} s: {'met' if 1e6 / rate < TARGET_S else 'MISSED'})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
