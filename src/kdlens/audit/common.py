"""What every audit kind shares: the teacher's name, how models and data are named for the stage cache, how a
per-example value is summarised, and how a sharded stage's per-example tensors travel as one shard's state."""

from __future__ import annotations

import json

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


def pack(nested: dict) -> dict[str, torch.Tensor]:
    """A nested dict of tensors (string keys, any depth) as the flat dict of tensors a sharded stage's ``map``
    returns; :func:`unpack` restores it, nesting and key order included (a safetensors file keeps neither).

    Each key is the JSON list ``[position, *path]``, so any model name is safe in a path.

    >>> pack({"teacher": {"correct": torch.ones(2)}, "n": torch.tensor([2])})
    {'[0, "teacher", "correct"]': tensor([1., 1.]), '[1, "n"]': tensor([2])}
    """
    flat: dict[str, torch.Tensor] = {}

    def walk(value, path: list[str]) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, [*path, key])
        else:
            assert isinstance(value, torch.Tensor), f"pack holds tensors only, got {type(value).__name__} at {path}"
            flat[json.dumps([len(flat), *path])] = value

    walk(nested, [])
    return flat


def unpack(flat: dict[str, torch.Tensor]) -> dict:
    """The nested dict :func:`pack` flattened into ``flat`` (in any key order), in its original order.

    >>> unpack(pack({"a": {"b": torch.zeros(1)}, "c": torch.ones(1)}))
    {'a': {'b': tensor([0.])}, 'c': tensor([1.])}
    """
    nested: dict = {}
    for _, key in sorted((json.loads(key)[0], key) for key in flat):
        path = json.loads(key)[1:]
        where = nested
        for step in path[:-1]:
            where = where.setdefault(step, {})
        where[path[-1]] = flat[key]
    return nested


def concat(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Shards' states of per-example tensors (the same keys in each), every tensor joined over the shards in
    order along dim 0: the state of all their examples."""
    assert states, "no shard states to join"
    keys = set(states[0])
    assert all(set(state) == keys for state in states), "shard states with different keys"
    return {key: torch.cat([state[key] for state in states]) for key in states[0]}
