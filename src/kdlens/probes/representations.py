"""Classifier representations: each layer's activations pooled to one (n, d) row per example, ready for CKA."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kdlens.subjects import Classifier

POOL_NOTE = ("Conv maps (n, C, H, W) are global-average-pooled over H, W to (n, C); token sequences (n, T, d) are "
             "averaged over T; (n, d) features are used as they are.")


def pooled(t: torch.Tensor) -> torch.Tensor:
    """(n, d) features: conv maps (n, C, H, W) global-average-pooled, sequences (n, T, d) averaged over T."""
    if t.ndim == 4:
        return t.mean(dim=(2, 3))  # (n, C)
    if t.ndim == 3:
        return t.mean(dim=1)  # (n, d)
    return t.reshape(t.shape[0], -1)  # (n, d)


def layer_features(model: nn.Module, name: str, inputs: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Pooled float64 activations (n, d) of ``layers`` on one batch; NaN or inf is an error naming the layer."""
    _, acts = Classifier(model, name).run(inputs, layers, len(inputs))
    out = {layer: pooled(acts[layer]).double() for layer in layers}
    for layer, f in out.items():
        if not bool(torch.isfinite(f).all()):
            raise ValueError(f"Expected layer {layer!r} of model {name!r} to give finite activations, but got NaN "
                             f"or inf. Check the checkpoint and the input scaling.")
    return out
