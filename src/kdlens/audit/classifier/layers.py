"""Which layers the audit reads when the config does not say: found by watching one forward pass."""

from __future__ import annotations

import torch
from torch import nn

from kdlens.probes.attribution_common import evaluating
from kdlens.subjects import Classifier


def _fired(model: nn.Module, probe: torch.Tensor) -> tuple[list[tuple[str, torch.Tensor]], dict[str, int],
                                                           torch.Tensor]:
    """Every named module's output in the order they finished, how often each ran, and the model's logits."""
    order: list[tuple[str, torch.Tensor]] = []
    calls: dict[str, int] = {}
    handles = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            output = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(output, torch.Tensor):
                order.append((name, output))
                calls[name] = calls.get(name, 0) + 1
        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook_for(name)))
    try:
        with evaluating(model), torch.no_grad():
            logits = Classifier(model).forward(probe.to(Classifier(model).device))
    finally:
        for handle in handles:
            handle.remove()
    return order, calls, logits


def default_layers(model: nn.Module, probe: torch.Tensor) -> dict:
    """The layers kdlens reads from ``model`` when none are named.

    Parameters
    ----------
    model : a classifier
    probe : (b, ...) a few inputs (one forward pass, eval mode, no gradients)

    Returns
    -------
    ``{"attribution": name or None, "representations": [names]}``: for attribution the last module to produce a
    spatial (b, C, H, W) map with H * W > 1 (Grad-CAM's usual choice; a block rather than its last ReLU, as the
    block finishes later); for representations the top-level modules run once per pass whose output is not the
    logits (one level down when the model has fewer than two such, e.g. a single ``features`` Sequential).
    """
    order, calls, logits = _fired(model, probe)
    spatial = [name for name, out in order if out.ndim == 4 and out.shape[2] * out.shape[3] > 1]

    def blocks(depth: int) -> list[str]:
        seen: list[str] = []
        for name, out in order:
            if name.count(".") + 1 == depth and calls[name] == 1 and out.ndim >= 2 and name not in seen \
                    and not (out.shape == logits.shape and torch.equal(out, logits)):
                seen.append(name)
        return seen

    representations = blocks(1)
    if len(representations) < 2:
        representations = blocks(2) or representations
    return {"attribution": spatial[-1] if spatial else None, "representations": representations}
