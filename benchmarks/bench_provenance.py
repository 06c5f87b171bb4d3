"""Sentence provenance (issue 17): one scoring pass per model per trajectory against re-scoring every sentence on
its own prefix (the obvious way: one forward per sentence per model), and against the floor of three plain forward
passes over the trajectories, on the tiny language-model lab (teacher, base student, seq_kd).

    .venv/bin/python benchmarks/bench_provenance.py            # 200 trajectories of about 20 sentences, ~2 minutes
    .venv/bin/python benchmarks/bench_provenance.py --n 50
    .venv/bin/python benchmarks/bench_provenance.py --real --n 40   # SmolLM2-135M, its half-depth and int8 copies

Targets: >= 10x faster than re-scoring each sentence, with the same categories; <= 1.5x the floor. All three run
in this process on the same texts, one thread, after a warm-up; the times are the best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from pathlib import Path

import torch

from bench_multiprocess import tiny_recipe

TARGET_NAIVE, TARGET_FLOOR = 10.0, 1.5


def trajectories(n: int, per: int = 5, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` prompts and trajectories: each trajectory is the lab's solutions of ``per`` chain questions one after
    another (about 20 sentences, within the tiny lab's 256 positions)."""
    from kdlens.tasks import chains

    questions = chains.make_split(chains.ChainsConfig(max_steps=3), "test", per * n)
    random.Random(seed).shuffle(questions)
    prompts = [questions[per * i].prompt for i in range(n)]
    texts = [" " + " ".join(chains.write_trace(q, "teacher") for q in questions[per * i:per * (i + 1)])
             for i in range(n)]
    return prompts, texts


def real_trajectories(n: int, per: int = 20, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` prompts and trajectories from the real-model example's questions: each trajectory is the worked
    solutions of ``per`` questions, one per line (about 20 sentences: most solutions are one)."""
    import json

    rows = [json.loads(line) for line in Path("examples/real_lm/questions.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    prompts, texts = [], []
    for _ in range(n):
        picked = rng.sample(rows, per)
        prompts.append(f"Question: {picked[0]['question']}\nAnswer:")
        texts.append(" " + "\n".join(r["solution"] for r in picked))
    return prompts, texts


def real_models() -> list:
    """The real-model example's models: SmolLM2-135M-Instruct (teacher), every second block dropped (the original
    student's stand-in), int8 dynamic quantisation (the distilled model's stand-in)."""
    from kdlens.subjects.sources import ModelSource, load_models

    gguf = "runs/models/smollm2.gguf"
    sources = {"teacher": ModelSource(gguf=gguf),
               "half_depth": ModelSource(gguf=gguf, compress={"keep_layers": "every_second"}),
               "int8": ModelSource(gguf=gguf, compress={"quantize": "int8_dynamic"})}
    loaded = load_models(sources, "lm", "cpu", progress=False)
    return [loaded[name] for name in ("teacher", "half_depth", "int8")]


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def naive(models, prompts, texts, spans, batch_size) -> list[list[torch.Tensor]]:
    """Each sentence scored on its own prefix: one (context, sentence) pair per sentence per model, the whitespace
    before a sentence going with it (as in one pass)."""
    out = []
    for model in models:
        contexts, continuations, owners = [], [], []
        for j, (prompt, text, sentences) in enumerate(zip(prompts, texts, spans, strict=True)):
            begin = 0
            for i, (_, end) in enumerate(sentences):
                contexts.append(prompt + text[:begin])
                continuations.append(text[begin:end])
                owners.append((j, i))
                begin = end
        scores = model.score(contexts, continuations, batch_size=batch_size)
        per = [torch.full((len(s),), float("nan"), dtype=torch.float64) for s in spans]
        for (j, i), score in zip(owners, scores, strict=True):
            per[j][i] = math.exp(score.mean)
        out.append(per)
    return out


def floor(models, prompts, texts, batch_size) -> None:
    """Three plain forward passes over prompt + trajectory (no log-softmax, nothing kept)."""
    for model in models:
        encoded = model.encode([p + t for p, t in zip(prompts, texts, strict=True)], offsets=False)
        with torch.inference_mode():
            for lo in range(0, len(encoded), batch_size):
                rows = [e.ids for e in encoded[lo:lo + batch_size]]
                width = max(map(len, rows))
                ids = torch.tensor([r + [model.pad_token_id] * (width - len(r)) for r in rows])
                mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
                model.model(input_ids=ids, attention_mask=mask)


def best(repeats: int, work) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="trajectories (default 200)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--real", action="store_true", help="the real-model example's three models (needs "
                        "runs/models/smollm2.gguf: make real-lm links it)")
    args = parser.parse_args()
    from kdlens.lab import lm
    from kdlens.probes.provenance import categorize, sentence_probabilities
    from kdlens.tasks.text import split_sentences

    torch.set_num_threads(1)
    if args.real:
        models = real_models()
        prompts, texts = real_trajectories(args.n)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            lab = lm.build(Path(tmp), lm.LMLabConfig(**{**tiny_recipe(), "students": ["seq_kd"]}), progress=False)
            models = [lab.model(name) for name in ("teacher", "base_student", "seq_kd")]
        prompts, texts = trajectories(args.n)
    spans = [split_sentences(t)[1] for t in texts]
    sentences = sum(map(len, spans))
    print(f"{args.n} trajectories, {sentences} sentences ({sentences / args.n:.1f} each), 3 models, one thread",
          flush=True)
    floor(models, prompts[:8], texts[:8], args.batch_size)  # warm-up
    loaded_mb = peak_rss_mb()
    ours_s, ours = best(args.repeats, lambda: [sentence_probabilities(m, prompts, texts, spans,
                                                                      batch_size=args.batch_size) for m in models])
    ours_mb = peak_rss_mb()
    print(f"kdlens (one pass per model per trajectory): {ours_s:.2f} s; peak memory {loaded_mb:.0f} MB with the models "
          f"loaded and warmed up, {ours_mb:.0f} MB after kdlens's passes (+{ours_mb - loaded_mb:.0f} MB; the "
          f"process's peak RSS)", flush=True)
    floor_s, _ = best(args.repeats, lambda: floor(models, prompts, texts, args.batch_size))
    print(f"floor, 3 plain forward passes: {floor_s:.2f} s: kdlens {ours_s / floor_s:.2f}x the floor (target <= "
          f"{TARGET_FLOOR}x: {'met' if ours_s / floor_s <= TARGET_FLOOR else 'MISSED'})", flush=True)
    naive_s, theirs = best(1, lambda: naive(models, prompts, texts, spans, args.batch_size))
    same = all(categorize(*(ours[m][j] for m in range(3))) == categorize(*(theirs[m][j] for m in range(3)))
               for j in range(args.n))
    largest = max(float(((a - b).abs() / b.abs().clamp_min(1e-300)).nan_to_num(0).max())
                  for m in range(3) for a, b in zip(ours[m], theirs[m], strict=True))
    for m in range(3):  # int8 dynamic quantisation scales activations per batch: other batches, other numbers
        pairs = [(a, b) for a, b in zip(ours[m], theirs[m], strict=True)]
        absolute = max(float((a - b).abs().nan_to_num(0).max()) for a, b in pairs)
        logs = max(float((a.log() - b.log()).abs().nan_to_num(0).max()) for a, b in pairs)
        print(f"  model {m}: largest difference of a probability {absolute:.1e}, of its log {logs:.1e}")
    print(f"re-scoring each sentence: {naive_s:.2f} s: kdlens {naive_s / ours_s:.1f}x faster (target >= "
          f"{TARGET_NAIVE:.0f}x: {'met' if naive_s / ours_s >= TARGET_NAIVE else 'MISSED'}); same categories: {same}; "
          f"largest relative difference of a probability {largest:.1e}")

if __name__ == "__main__":
    main()
