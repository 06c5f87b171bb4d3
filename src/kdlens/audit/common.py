"""What every audit kind shares: the teacher's name, how models and data are named for the stage cache, and how a
per-example value is summarised."""

from __future__ import annotations

import torch
from torch import nn

from kdlens import io
from kdlens import measures as M
from kdlens.tasks.files import EvalSplit

TEACHER = "teacher"


def digests(models: dict[str, nn.Module]) -> dict[str, str]:
    """Model name -> the digest of its weights (what a stage's result depends on)."""
    return {name: io.tensors_digest(model.state_dict()) for name, model in models.items()}


def data_digest(data: EvalSplit) -> str:
    """The digest of a split's tensors (inputs, labels and whatever the task knows)."""
    return io.tensors_digest([t for t in (data.inputs, data.labels, data.masks, data.difficulty, data.counterfactuals,
                                          data.counterfactual_targets) if t is not None])


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
