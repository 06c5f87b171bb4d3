"""Teacher-guided data selection on the language-model lab (issue 17): the paper's ablation, reproduced or refuted.

For each seed: ``kdlens select`` samples k teacher responses per problem (the lab's validation split, the prompts
its distilled students were trained on), classifies every sentence with the teacher and the base student, and
writes one response per problem for each method. The base student is then fine-tuned on each selection (the lab's
distillation settings, that seed) and its greedy answers are checked on the audit's test questions. Two budgets:

- same examples: one response for every problem, the tokens each method's picks hold;
- same tokens: every selection cut, in one seeded order of problems shared by all methods, to the token count of
  the smallest selection, so no method wins by training on more text.

Accuracy is pooled over seeds; its 95% interval resamples test questions (the same questions for every method and
seed), and so does the difference from ``random``.

    .venv/bin/python benchmarks/select_lab.py                    # 3 seeds, 600 problems, k = 4: about 20 minutes
    .venv/bin/python benchmarks/select_lab.py --seeds 0 --n 100  # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from kdlens.distill.lm import train_lm
from kdlens.lab import lm
from kdlens.measures.resampling import bootstrap_indices
from kdlens.probes import traces as T
from kdlens.select.choose import METHODS
from kdlens.select.run import select
from kdlens.subjects.lm import LanguageModel
from kdlens.tasks import babi, chains


def same_tokens(selections: dict[str, list[dict]], seed: int) -> dict[str, list[dict]]:
    """Each selection's first rows, in one seeded order of problems, up to the smallest selection's token count."""
    budget = min(sum(r["tokens"] for r in rows) for rows in selections.values())
    order = list(range(max(r["index"] for rows in selections.values() for r in rows) + 1))
    random.Random(seed).shuffle(order)
    place = {index: k for k, index in enumerate(order)}
    out = {}
    for method, rows in selections.items():
        kept, used = [], 0
        for row in sorted(rows, key=lambda r: place[r["index"]]):
            if used + row["tokens"] > budget:
                break
            kept.append(row)
            used += row["tokens"]
        out[method] = kept
    return out


def accuracy_interval(correct: torch.Tensor, n_resamples: int = 2000) -> tuple[float, float, float]:
    """Mean and 95% percentile interval of (seeds, questions) correctness, resampling questions."""
    draws = torch.cat([correct[:, rows].double().mean((0, 2))  # rows (r, questions) -> (r,)
                       for rows in bootstrap_indices(correct.shape[1], n_resamples, 0, chunk=250)])
    low, high = torch.quantile(draws, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(correct.double().mean()), low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=300, help="problems per task (default 300: 600 in all)")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--test", type=int, default=300, help="test questions per task")
    parser.add_argument("--root", default="runs/select-lab")
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = Path(args.root)
    lab = lm.build("runs/lab", progress=False)
    config = lab.config
    test = chains.make_split(config.chains, "test", args.test) + babi.make_split(config.babi, "test", args.test)
    correct: dict[str, dict[str, list[torch.Tensor]]] = {b: {m: [] for m in METHODS} for b in ("examples", "tokens")}
    sizes: dict[str, dict[str, list]] = {b: {m: [] for m in METHODS} for b in ("examples", "tokens")}
    started = time.perf_counter()
    for seed in args.seeds:
        found = select({"run_dir": str(root / f"seed{seed}"), "teacher": {"lab": "lm"},
                        "student": {"lab": "lm", "lab_model": "base_student"}, "seed": seed, "k": args.k,
                        "temperature": args.temperature,
                        "data": {"task": "reasoning", "split": "validation", "n": args.n}, "batch_size": 64},
                       progress=False)
        folder = Path(found["folder"])
        print(f"seed {seed}: {found['distinct']:.2f} different responses per problem of {args.k}", flush=True)
        picked = {m: [json.loads(line) for line in (folder / f"{m}.jsonl").read_text().splitlines()] for m in METHODS}
        for budget, selections in (("examples", picked), ("tokens", same_tokens(picked, seed))):
            for method, rows in selections.items():
                base = lab.model("base_student")
                result = train_lm(base.model.train(), base.tokenizer, [r["prompt"] for r in rows],
                                  [r["response"] for r in rows], root / f"seed{seed}" / "students" / budget / method,
                                  config.distill_train.model_copy(update={"seed": seed, "progress": False}))
                student = LanguageModel.from_pretrained(result.model_dir)
                texts = T.generate_traces(student, test, max_new_tokens=config.max_new_tokens, batch_size=64)
                correct[budget][method].append(torch.tensor([c.answer_correct for c in T.check_traces(test, texts)]))
                sizes[budget][method].append((len(rows), sum(r["tokens"] for r in rows)))
                accuracy = correct[budget][method][-1].double().mean()
                print(f"seed {seed} · same {budget} · {method}: {len(rows)} examples, "
                      f"{sum(r['tokens'] for r in rows)} tokens, accuracy {accuracy:.3f}"
                      f" ({time.perf_counter() - started:.0f} s)", flush=True)
    summary = {}
    for budget in ("examples", "tokens"):
        print(f"\nsame {budget} ({len(args.seeds)} seeds x {len(test)} test questions; 95% intervals over questions)")
        reference = torch.stack(correct[budget]["random"])  # (seeds, questions)
        for method in METHODS:
            mine = torch.stack(correct[budget][method])
            mean, low, high = accuracy_interval(mine)
            d_mean, d_low, d_high = accuracy_interval(mine.double() - reference.double())
            per_seed = [round(float(c.double().mean()), 3) for c in correct[budget][method]]
            print(f"  {method:22s} accuracy {mean:.3f} [{low:.3f}, {high:.3f}]  vs random {d_mean:+.3f} "
                  f"[{d_low:+.3f}, {d_high:+.3f}]  per seed {per_seed}  (examples, tokens) {sizes[budget][method]}")
            summary.setdefault(budget, {})[method] = {
                "accuracy": mean, "low": low, "high": high, "minus_random": d_mean, "minus_random_low": d_low,
                "minus_random_high": d_high, "per_seed": per_seed, "sizes": sizes[budget][method]}
    (root / "results.json").write_text(json.dumps({"seeds": args.seeds, "n": args.n, "k": args.k, **summary},
                                                  indent=1))
    print(f"\n{time.perf_counter() - started:.0f} s; {root / 'results.json'}")


if __name__ == "__main__":
    main()
