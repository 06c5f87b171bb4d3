"""What every audit stage shares: the data it runs on, how it names its inputs for the cache, how it writes its
files, and how it summarises per-example values."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from torch import nn

from kdlens import io
from kdlens import measures as M
from kdlens.stages import MANIFEST
from kdlens.tasks.files import EvalSplit

TEACHER = "teacher"


# What an audit stage runs on: inputs (n, ...) and labels (n,), plus what the task knows when it knows it (evidence
# masks, difficulty, counterfactual inputs and the class each edited cue names, class names): the tasks' EvalSplit.
AuditData = EvalSplit


def digests(models: dict[str, nn.Module]) -> dict[str, str]:
    return {name: io.tensors_digest(model.state_dict()) for name, model in models.items()}


def data_digest(data: AuditData) -> str:
    return io.tensors_digest([t for t in (data.inputs, data.labels, data.masks, data.difficulty, data.counterfactuals,
                                          data.counterfactual_targets) if t is not None])


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def mean_ci(values: torch.Tensor, seed: int = 0) -> dict:
    """Mean with a 95% percentile-bootstrap interval, NaNs dropped; None where nothing is defined (the interval
    also where fewer than two values are)."""
    values = values.double()
    defined = values[~torch.isnan(values)]
    if len(defined) < 2:  # no interval from fewer than two values; the mean of one is still that value
        return {"mean": float(defined[0]) if len(defined) else None, "low": None, "high": None, "n": len(defined)}
    interval = M.bootstrap_mean_interval(values, n_resamples=1000, seed=seed)
    return {"mean": interval.estimate, "low": interval.low, "high": interval.high,
            "n": int((~torch.isnan(values)).sum())}


def read_rows(run_dir: Path, stage: str) -> list[dict]:
    """A stage's ``examples.jsonl``, one dict per row (empty when the stage did not run)."""
    path = Path(run_dir) / "stages" / stage / "examples.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_stage(folder: Path, figures: dict, rows: list[dict], arrays: dict[str, torch.Tensor] | None = None) -> None:
    if arrays:
        io.save_tensors(folder / "maps.safetensors", arrays)
    lines = (json.dumps({k: _finite(v) if isinstance(v, float) else v for k, v in row.items()}) for row in rows)
    io.atomic_write_text(folder / "examples.jsonl", "\n".join(lines) + "\n")
    io.atomic_write_json(folder / "figures.json", figures)


def cached_or_seconds(run_dir: Path, name: str, fn) -> str:
    """Run stage ``name`` through ``fn`` and say how it went for the stage display: cached, or done in N s."""
    path = run_dir / MANIFEST
    before = io.read_json(path)["stages"].get(name, {}) if path.is_file() else {}
    summary = fn()
    after = io.read_json(path)["stages"][name]
    if before.get("done") and before.get("inputs") == after.get("inputs"):
        return "cached"
    return f"done in {summary.get('seconds', 0):.1f} s"


def forget_disabled(run_dir: Path, names: list[str]) -> None:
    """A probe turned off has no figures: its old files must not reach results.json."""
    path = run_dir / MANIFEST
    if not path.is_file():
        return
    manifest = io.read_json(path)
    for name in names:
        if name in manifest["stages"]:
            del manifest["stages"][name]
            shutil.rmtree(run_dir / "stages" / name, ignore_errors=True)
    io.atomic_write_json(path, manifest)
