"""kdlens measures against their peers on the same data, in one process: time, ratio, peak memory, error.

    .venv/bin/python benchmarks/bench_measures.py            # everything (about 3 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_measures.py --only ece cka

Peak memory is the growth of this process's resident set during a call (sampled every 2 ms), so it counts
torch, numpy and Python allocations alike. Peers that are not installed are skipped.
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time

import numpy as np
import torch

from kdlens import measures as M

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakMemory:
    """Context manager: highest resident-set growth seen while the block runs, in bytes."""

    def __enter__(self):
        gc.collect()
        self.base = self.peak = rss_bytes()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.growth = self.peak - self.base


def timed(fn, repeats: int = 1):
    """(best wall seconds over ``repeats`` calls, peak memory growth in bytes, result)."""
    if repeats == 1:  # one long call: sample memory while timing it (polling /proc costs well under 1% here)
        with PeakMemory() as mem:
            start = time.perf_counter()
            result = fn()
            seconds = time.perf_counter() - start
        return seconds, mem.growth, result
    times = []
    for _ in range(repeats):  # short calls: time them unsampled, then sample one extra call for memory
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    with PeakMemory() as mem:
        fn()
    return min(times), mem.growth, result


def row(name: str, seconds: float, peak: int, extra: str = "", baseline: float | None = None) -> None:
    ratio = f"{baseline / seconds:7.1f}x" if baseline else "        "
    print(f"  {name:<34} {seconds:9.3f} s  {peak / 2**20:9.1f} MiB  {ratio}  {extra}")


def ece_reference(probs64: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    conf, pred = probs64.max(1), probs64.argmax(1)
    index = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)  # (a, b] bins
    gaps = np.bincount(index, weights=(pred == labels) - conf, minlength=n_bins)
    return float(np.abs(gaps).sum() / len(conf))


def bench_ece(n: int = 1_000_000, classes: int = 10, n_bins: int = 15) -> None:
    print(f"\nECE, {n:,} x {classes} float32 probabilities, {n_bins} bins (best of 5)")
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(n, classes, generator=g), -1)  # float32, as models produce them
    labels = torch.randint(0, classes, (n,), generator=g)
    truth = ece_reference(probs.double().numpy(), labels.numpy(), n_bins)
    seconds, peak, value = timed(lambda: M.expected_calibration_error(probs, labels, n_bins), repeats=5)
    ours = seconds
    row("kdlens expected_calibration_error", seconds, peak, f"|error| {abs(value - truth):.1e}")
    try:
        from torchmetrics.functional.classification import multiclass_calibration_error

        seconds, peak, value = timed(lambda: float(multiclass_calibration_error(
            probs, labels, num_classes=classes, n_bins=n_bins)), repeats=5)
        row("torchmetrics multiclass_calibration", seconds, peak, f"|error| {abs(value - truth):.1e}", None)
        print(f"  -> kdlens is {seconds / ours:.2f}x the speed of torchmetrics")
    except ImportError:
        print("  torchmetrics: not installed")
    try:
        from netcal.metrics import ECE

        probs_np, labels_np = probs.numpy(), labels.numpy()
        seconds, peak, value = timed(lambda: float(ECE(bins=n_bins).measure(probs_np, labels_np)), repeats=5)
        row("netcal ECE", seconds, peak, f"|error| {abs(value - truth):.1e}")
        print(f"  -> kdlens is {seconds / ours:.2f}x the speed of netcal")
    except ImportError:
        print("  netcal: not installed (pip install -e '.[oracles]')")


def bench_cka(n: int = 10_000, d1: int = 512, d2: int = 256) -> None:
    print(f"\nlinear CKA, n = {n:,}, d = {d1} vs {d2}, float32 features")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d1, generator=g)
    y = x[:, :d2] @ torch.randn(d2, d2, generator=g) / d2**0.5 + torch.randn(n, d2, generator=g)
    seconds, peak, ours_value = timed(lambda: M.linear_cka(x, y), repeats=3)
    ours = seconds
    row("kdlens linear_cka", seconds, peak, f"CKA {ours_value:.10f}")
    seconds, peak, _ = timed(lambda: M.linear_cka(x, y, debiased=True), repeats=3)
    row("kdlens linear_cka (debiased)", seconds, peak)
    try:
        from ckatorch.core import cka_base

        seconds, peak, value = timed(lambda: float(cka_base(x, y)))
        row("ckatorch cka_base (n x n Grams)", seconds, peak, f"CKA {value:.10f}")
        print(f"  -> kdlens is {seconds / ours:.1f}x faster than ckatorch (target: 40x); "
              f"|difference| {abs(value - ours_value):.1e}")
    except ImportError:
        print("  ckatorch: not installed (pip install -e '.[oracles]')")


def bench_streaming(n: int = 1_000_000, d1: int = 512, d2: int = 256, batch: int = 10_000) -> None:
    print(f"\nexact streaming LinearCKA, n = {n:,} (d = {d1} vs {d2}) in batches of {batch:,}, "
          "features generated per batch")
    w = torch.randn(d2, d2, generator=torch.Generator().manual_seed(2)) / d2**0.5

    def run():
        metric = M.LinearCKA()
        g = torch.Generator().manual_seed(3)
        for _ in range(n // batch):
            x = torch.randn(batch, d1, generator=g) + 1.0
            y = x[:, :d2] @ w + torch.randn(batch, d2, generator=g)
            metric.update(x, y)
        return float(metric.compute())

    seconds, peak, value = timed(run)
    row("kdlens LinearCKA", seconds, peak, f"CKA {value:.10f} (target: < 1024 MiB)")
    print(f"  (a single batch of features is {batch * (d1 + d2) * 4 / 2**20:.0f} MiB; the whole data set would be "
          f"{n * (d1 + d2) * 4 / 2**30:.1f} GiB in float32)")


def bench_matrix(n: int = 50_000, layers: int = 12, d1: int = 512, d2: int = 256, batch: int = 5_000) -> None:
    print(f"\n{layers} x {layers} layer CKA matrix, n = {n:,}, teacher layers d = {d1}, student d = {d2}, "
          f"one pass in batches of {batch:,}")
    g = torch.Generator().manual_seed(4)
    mix_a = [torch.randn(64, d1, generator=g) for _ in range(layers)]
    mix_b = [torch.randn(64, d2, generator=g) for _ in range(layers)]
    names_a, names_b = [f"teacher.block{i}" for i in range(layers)], [f"student.block{i}" for i in range(layers)]

    def run():
        metric = M.CKAMatrix(names_a, names_b)
        gen = torch.Generator().manual_seed(5)
        for _ in range(n // batch):
            z = torch.randn(batch, 64, generator=gen)  # shared latent so the layers are related
            feats_a = {k: (z @ m).relu() for k, m in zip(names_a, mix_a, strict=True)}
            feats_b = {k: torch.tanh(z @ m) for k, m in zip(names_b, mix_b, strict=True)}
            metric.update(feats_a, feats_b)
        return metric.compute()

    seconds, peak, matrix = timed(run)
    row("kdlens CKAMatrix", seconds, peak, f"diag mean {float(matrix.diagonal().mean()):.4f}")
    print("  (ckatorch and torch-cka build n x n Gram matrices: 50,000^2 float64 = 18.6 GiB each)")


BENCHES = {"ece": bench_ece, "cka": bench_cka, "streaming": bench_streaming, "matrix": bench_matrix}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"  {'':<34} {'time':>11}  {'peak mem':>13}")
    for name in args.only:
        BENCHES[name]()


if __name__ == "__main__":
    main()
