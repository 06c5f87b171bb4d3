"""Audits beyond one process (issue 16): a language-model generation stage in 2 ``torchrun`` ranks against 1 process,
and what the shard bookkeeping costs a 1-process run.

    .venv/bin/python benchmarks/bench_multiprocess.py            # about 2 minutes on 2 cores
    .venv/bin/python benchmarks/bench_multiprocess.py --n 100    # a quicker look

Targets: the ``generate-teacher`` stage (greedy traces of the tiny lab's teacher on 400 questions, one thread per
process) at least 1.6x faster in 2 ranks than in 1, with the same traces; the bookkeeping (saving each chunk's
state, reading it back, the reduce) under 3% of the stage's time in 1 process. The stage's time is the manifest's
(rank 0's, from its first chunk to the reduce written), so process start-up and model loading are left out; both
are printed too. The peer is kdlens itself: no other library runs this audit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEEDUP_TARGET, OVERHEAD_TARGET = 1.6, 0.03


def tiny_recipe() -> dict:
    """The tests' tiny language-model lab (tests/lab/test_lm.py): seconds to build."""
    from kdlens.distill import TrainConfig
    from kdlens.lab import lm
    from kdlens.tasks import chains

    one = TrainConfig(epochs=1, batch_size=32, lr=3e-3)
    return lm.LMLabConfig(
        chains=chains.ChainsConfig(max_steps=2, start_range=(0, 5), operand_range=(1, 3), multiplier_range=(2, 2),
                                   max_value=20),
        n_train=24, n_train_babi=None, n_transfer=8, max_new_tokens=24,
        teacher_model=lm.LlamaSpec(hidden_size=16, num_hidden_layers=1),
        student_model=lm.LlamaSpec(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1),
        teacher_train=one, student_train=one, distill_train=one).model_dump(mode="json")


def audit_config(folder: Path, n: int, run: str) -> Path:
    source = {"lab": "lm", "lab_root": str(folder / "labs"), "lab_recipe": str(folder / "tiny.yaml")}
    config = {"run_dir": str(folder / run), "data": {"task": "reasoning", "n": n}, "teacher": source,
              "students": {"base_student": {**source, "lab_model": "base_student"}},
              "probes": {"traces": {"max_new_tokens": 30, "batch_size": 16}, "calibration": {"enabled": False},
                         "representations": {"enabled": False}}}
    path = folder / f"{run}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def audit(path: Path, ranks: int) -> float:
    """Run ``kdlens audit`` (under torchrun for ranks > 1) with one thread per process; its wall seconds."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] if ranks > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    subprocess.run([sys.executable, *launcher, "-m", "kdlens", "audit", str(path), "--quiet", "--no-report"],
                   check=True, env=env, cwd=ROOT, capture_output=True)
    return time.perf_counter() - started


def stage_seconds(run_dir: Path, stage: str) -> float:
    from kdlens.io import read_json

    return read_json(run_dir / "manifest.json")["stages"][stage]["seconds"]


def bench_ranks(folder: Path, n: int, repeats: int = 3) -> None:
    """Best of ``repeats`` runs each (a fresh run directory every time: nothing cached)."""
    from kdlens.rundir import RunDir

    walls, stages, texts = {1: [], 2: []}, {1: [], 2: []}, {}
    for repeat in range(repeats):
        for ranks in (1, 2):
            path = audit_config(folder, n, f"ranks{ranks}-{repeat}")
            walls[ranks].append(audit(path, ranks))
            run_dir = folder / f"ranks{ranks}-{repeat}"
            stages[ranks].append(stage_seconds(run_dir, "generate-teacher"))
            texts.setdefault(ranks, [row["text"] for row in RunDir(run_dir).stage("generate-teacher").rows()])
    speedup = min(stages[1]) / min(stages[2])
    print(f"generate-teacher, {n} questions, best of {repeats}: 1 process {min(stages[1]):.2f} s, 2 ranks "
          f"{min(stages[2]):.2f} s: {speedup:.2f}x (target >= {SPEEDUP_TARGET}x: "
          f"{'met' if speedup >= SPEEDUP_TARGET else 'MISSED'}); same traces: {texts[1] == texts[2]}")
    print(f"  every run: 1 process {', '.join(f'{x:.2f}' for x in stages[1])} s; 2 ranks "
          f"{', '.join(f'{x:.2f}' for x in stages[2])} s")
    print(f"whole audit command (start-up, loading, all stages), best of {repeats}: 1 process {min(walls[1]):.1f} s, "
          f"2 ranks {min(walls[2]):.1f} s: {min(walls[1]) / min(walls[2]):.2f}x")


def bench_overhead(folder: Path, n: int, repeats: int = 3) -> None:
    """The generation stage through the runner (chunks saved, read back, reduced) against the same chunks
    generated directly, in this process, one thread; best of ``repeats``."""
    import torch

    from kdlens.audit.lm import stages as S
    from kdlens.lab import lm
    from kdlens.lab.lm import LMLabConfig
    from kdlens.probes import traces as T
    from kdlens.rundir import RunDir
    from kdlens.stages import run_stage
    from kdlens.tasks import chains

    torch.set_num_threads(1)
    recipe = LMLabConfig(**yaml.safe_load((folder / "tiny.yaml").read_text()))
    model = lm.build(folder / "labs", recipe, progress=False).model("teacher")
    questions = chains.make_split(recipe.chains, "test", n)
    settings = {"max_new_tokens": 30, "batch_size": 16, "decoding": "greedy"}
    chunks = S.generation_stage("teacher", model, questions, settings).shards  # the stage's own chunks
    direct, staged = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        plain = [t for chunk in chunks for t in T.generate_traces(
            model, questions[chunk.start:chunk.stop], max_new_tokens=30, batch_size=16)]
        direct.append(time.perf_counter() - started)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as run:
            run_stage(run, S.generation_stage("teacher", model, questions, settings))
            assert S.generated(RunDir(run), "teacher") == plain
        staged.append(time.perf_counter() - started)
    overhead = min(staged) / min(direct) - 1
    print(f"bookkeeping, 1 process, {n} questions: direct {min(direct):.3f} s, as a sharded stage "
          f"{min(staged):.3f} s: {overhead:+.1%} (target < {OVERHEAD_TARGET:.0%}: "
          f"{'met' if overhead < OVERHEAD_TARGET else 'MISSED'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400, help="questions (default 400)")
    args = parser.parse_args()
    from kdlens.lab import lm
    from kdlens.lab.lm import LMLabConfig

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "tiny.yaml").write_text(yaml.safe_dump(tiny_recipe()))
        lm.build(folder / "labs", LMLabConfig(**tiny_recipe()), progress=False)  # built once, before any timing
        bench_ranks(folder, args.n)
        bench_overhead(folder, args.n)


if __name__ == "__main__":
    main()
