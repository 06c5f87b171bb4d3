"""Crosscoder throughput (issue 18), training and activation collection.

Training: activation pairs per second through kdlens's training (:func:`kdlens.distill.crosscoder.train`: the
training loop, its schedule, checkpoint and progress machinery) against a plain PyTorch loop of the same model and
loss (AdamW, no schedule, no checkpoint), on the same random pairs, in one process. BatchTopK, 8x expansion, k = 32,
batch 1,024. Target: 1,000,000 pairs at d = 128 in under 5 minutes (printed as the time 1M pairs take).

Collection (run after training, or alone with ``--collect``): tokens per second through
:func:`kdlens.probes.crosscoder.paired_activations` of two lab-sized Llama models (d = 128, 4 blocks, random weights,
a word tokenizer) at their default block (half depth; ``--block``), against the two models' plain full forward passes
(``model(input_ids, attention_mask)``) on the same padded batches, in one process; best of ``--repeats``. Target:
collection within 1.3x of the plain forwards' time.

    .venv/bin/python benchmarks/bench_crosscoder.py      # d = 128 (the lab) and 576 (SmolLM2), then collection
    .venv/bin/python benchmarks/bench_crosscoder.py --pairs 50000 --widths 128
    .venv/bin/python benchmarks/bench_crosscoder.py --collect --texts 256 --words 100
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from kdlens.distill import crosscoder as C
from kdlens.distill.config import TrainConfig
from kdlens.probes.crosscoder import paired_activations
from kdlens.subjects import SPECIAL_TOKEN_IDS, LanguageModel, build_word_tokenizer
from kdlens.subjects.lm.batching import pad_rows

TARGET_S = 300.0
COLLECT_TARGET = 1.3  # collection's time over the plain forwards' time


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


def lab_llama(tokenizer, seed: int) -> LanguageModel:
    """A lab-sized Llama (d = 128, 4 blocks, MLP 256) with random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    net = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256,
                                       num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=256, tie_word_embeddings=False, **SPECIAL_TOKEN_IDS))
    return LanguageModel(net.eval(), tokenizer, f"llama{seed}")


def truncated(model: LanguageModel, block: int) -> LanguageModel:
    """A copy of ``model`` holding its blocks up to ``block`` only: its plain forward is the least work that reaches
    the block (plus the final norm and head, which are small at the benchmark's vocabulary)."""
    import copy

    net = copy.deepcopy(model.model)
    net.model.layers = torch.nn.ModuleList(net.model.layers[:block + 1])
    net.config.num_hidden_layers = block + 1
    return LanguageModel(net, model.tokenizer, model.name)


def plain_forwards(models: list[LanguageModel], texts: list[str], batch_size: int) -> float:
    """Seconds for each model's full forward pass (logits included) over ``texts`` in the same right-padded batches
    as ``paired_activations`` (tokenized beforehand: tokenizing is not timed here, as it is in the collection)."""
    batches = []
    for model in models:
        rows = [e.ids for e in model.encode(texts, offsets=False)]
        batches.append([pad_rows(rows[lo:lo + batch_size], model.pad_token_id, "right")
                        for lo in range(0, len(rows), batch_size)])
    started = time.perf_counter()
    with torch.no_grad():
        for model, padded in zip(models, batches, strict=True):
            for ids, mask in padded:
                model.model(input_ids=ids, attention_mask=mask)
    return time.perf_counter() - started


def collect(n_texts: int, n_words: int, batch_size: int, repeats: int, threads: int, block: int | None) -> None:
    """Print tokens/s of ``paired_activations`` and of the plain forwards, and their ratio."""
    g = torch.Generator().manual_seed(0)
    lexicon = [f"w{i}" for i in range(1000)]
    lengths = torch.randint(int(0.8 * n_words), int(1.2 * n_words) + 1, (n_texts,), generator=g).tolist()
    texts = [" ".join(lexicon[j] for j in torch.randint(len(lexicon), (n,), generator=g).tolist()) for n in lengths]
    tokenizer = build_word_tokenizer(texts)
    models = [lab_llama(tokenizer, 0), lab_llama(tokenizer, 1)]
    tokens = sum(len(e.ids) for e in models[0].encode(texts, offsets=False)) * len(models)
    layers = (block, block)
    paired_activations(*models, texts[:batch_size], layers, batch_size)  # warm-up
    plain_forwards(models, texts[:batch_size], batch_size)
    reached = int(paired_activations(*models, texts[:1], layers, 1)["layers"][0].split(".")[1])
    short = [truncated(m, reached) for m in models]
    ours_s, plain_s, every_layer_s, short_s = [], [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        found = paired_activations(*models, texts, layers, batch_size)
        ours_s.append(time.perf_counter() - started)
        plain_s.append(plain_forwards(models, texts, batch_size))
        short_s.append(plain_forwards(short, texts, batch_size))
        started = time.perf_counter()
        for model in models:  # what collection cost before block_outputs: every layer kept
            model.hidden_states(texts, batch_size)
        every_layer_s.append(time.perf_counter() - started)
    ours, plain_, every, floor = min(ours_s), min(plain_s), min(every_layer_s), min(short_s)
    print(f"collection: 2 Llama models (d = 128, 4 blocks, at {found['layers'][0]}), {n_texts} texts of "
          f"~{n_words + 1} tokens, batch {batch_size}, {threads} threads, best of {repeats}: paired_activations "
          f"{tokens / ours:,.0f} tokens/s ({found['first'].shape[0]:,} pairs in {ours:.2f} s), plain forwards "
          f"{tokens / plain_:,.0f} tokens/s ({plain_:.2f} s): {ours / plain_:.2f}x their time (target <= "
          f"{COLLECT_TARGET}x: {'met' if ours / plain_ <= COLLECT_TARGET else 'MISSED'}); hidden_states of every "
          f"layer {tokens / every:,.0f} tokens/s ({every / plain_:.2f}x); against the plain forwards of the models cut "
          f"after that block (the least work that reaches it) {tokens / floor:,.0f} tokens/s: {ours / floor:.2f}x "
          f"their time (target <= {COLLECT_TARGET}x: {'met' if ours / floor <= COLLECT_TARGET else 'MISSED'})",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 576])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--collect", action="store_true", help="measure activation collection only")
    parser.add_argument("--texts", type=int, default=256, help="collection: texts")
    parser.add_argument("--words", type=int, default=100, help="collection: mean words (tokens) per text")
    parser.add_argument("--batch-size", type=int, default=16, help="collection: texts per forward pass")
    parser.add_argument("--block", type=int, default=None, help="collection: both models' block (default: half "
                        "depth, 1; the last, 3, is read after the final norm through the whole forward pass)")
    parser.add_argument("--repeats", type=int, default=3, help="collection: timed runs (the best is printed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.collect:
        train(args.pairs, args.widths, args.threads)
    collect(args.texts, args.words, args.batch_size, args.repeats, args.threads, args.block)


def train(n_pairs: int, widths: list[int], threads: int) -> None:
    """Print pairs/s of kdlens's crosscoder training and of the plain loop, per width."""
    batch, k = 1024, 32
    for d in widths:
        g = torch.Generator().manual_seed(0)
        pairs = [torch.randn(n_pairs, d, generator=g) for _ in range(2)]
        n = (n_pairs // batch) * batch
        floor_s = plain(pairs, 8 * d, k, batch, 1e-3)
        config = TrainConfig(epochs=1, batch_size=batch, lr=1e-3, weight_decay=0.0, progress=False, drop_last=True)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            C.train(pairs, 8 * d, tmp, config, k=k)
            ours_s = time.perf_counter() - started
        rate, floor_rate = n / ours_s, n / floor_s
        line = (f"d = {d}, {8 * d} latents, k = {k}, {n} pairs, {threads} threads: kdlens {rate:,.0f} pairs/s, "
                f"plain loop {floor_rate:,.0f} pairs/s ({ours_s / floor_s:.2f}x its time); 1M pairs in "
                f"{1e6 / rate:.0f} s")
        if d == 128:
            line += f" (target < {TARGET_S:.0f} s: {'met' if 1e6 / rate < TARGET_S else 'MISSED'})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
