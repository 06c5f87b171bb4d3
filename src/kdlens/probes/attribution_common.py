"""Machinery shared by the attribution probes: targets, logits, eval mode, and the hook that stops gradients at a layer.

Conventions are documented in :mod:`kdlens.probes.attribution`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from kdlens import validation as C
from kdlens.subjects import Classifier


def check_model(model) -> Classifier:
    if isinstance(model, Classifier):
        return model
    return Classifier(model, type(model).__name__)  # raises TypeError for anything but an nn.Module


def resolve_layer(subject: Classifier, layer) -> nn.Module:
    """The module at ``layer``: a ``named_modules()`` name (unknown names list close matches) or the module."""
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in subject.model.modules()):
            C.fail("layer", f"a submodule of {subject.name}", f"a {type(layer).__name__} from elsewhere",
                   "Pass the module from this model, or its named_modules() name.")
        return layer
    if not isinstance(layer, str):
        C.fail("layer", "a named_modules() name or an nn.Module", type(layer).__name__, error=TypeError)
    return subject.resolve(layer)


def check_batch(inputs) -> int:
    """The batch size of a tensor, or of a dict of tensors (its first tensor value), as passed to the model."""
    if isinstance(inputs, torch.Tensor):
        if inputs.ndim < 1 or inputs.shape[0] < 1:
            C.fail("inputs", "a non-empty batch of shape (B, ...)", f"shape {tuple(inputs.shape)}")
        return inputs.shape[0]
    if isinstance(inputs, Mapping):  # dict, or a Hugging Face BatchEncoding
        tensors = [v for v in inputs.values() if isinstance(v, torch.Tensor)]
        if tensors:
            return check_batch(tensors[0])
    C.fail("inputs", "a torch.Tensor (or a dict of tensors passed as model(**inputs))", type(inputs).__name__,
           error=TypeError)


def check_target(target, n: int) -> torch.Tensor:
    """(n,) int64 class indices on the CPU from an int, a list or a (n,) / 0-d integer tensor (range checked later)."""
    if isinstance(target, str):
        C.fail("target", "class indices (an int or a (B,) integer tensor)", f"the rule {target!r}",
               "Resolve a rule first: target = resolve_targets(rule, teacher_logits=..., student_logits=..., "
               "labels=...).", error=TypeError)
    if isinstance(target, bool) or target is None:
        C.fail("target", "an int or a (B,) integer tensor of class indices", repr(target), error=TypeError)
    t = torch.as_tensor(target).detach()
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        C.fail("target", "integer class indices", f"dtype {t.dtype}",
               "Pass class indices, e.g. logits.argmax(1), not scores.", error=TypeError)
    if t.ndim == 0:
        return t.long().cpu().expand(n)
    if t.ndim != 1 or t.shape[0] != n:
        C.fail("target", f"one class index per example: an int or shape ({n},)", f"shape {tuple(t.shape)}",
               "Targets and inputs must cover the same examples in the same order.")
    return t.long().cpu()


def check_target_range(target: torch.Tensor, n_classes: int, what: str = "classes") -> None:
    lo, hi = int(target.min()), int(target.max())
    if lo < 0 or hi >= n_classes:
        C.fail("target", f"indices in [0, {n_classes - 1}] (the model has {n_classes} {what})",
               f"values in [{lo}, {hi}]")


def output_logits(out, allow_sequence: bool = False) -> torch.Tensor:
    """Logits from a model's output: a tensor, ``.logits`` (Hugging Face), a dict's "logits", or a tuple's first."""
    if not isinstance(out, torch.Tensor):
        if isinstance(out, dict) or hasattr(out, "logits"):
            out = out["logits"] if isinstance(out, dict) else out.logits
        elif isinstance(out, (tuple, list)) and out:
            out = out[0]
    shapes = "(B, n_classes) or (B, T, vocab)" if allow_sequence else "(B, n_classes)"
    if not isinstance(out, torch.Tensor) or not (out.ndim == 2 or (allow_sequence and out.ndim == 3)):
        C.fail("the model's output", f"{shapes} logits (a tensor, .logits or a dict's 'logits')",
               f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}", "Wrap the model so it returns logits.")
    return out


def select(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) target logits, after checking the targets index one of the (B, C) logits' columns."""
    check_target_range(target, logits.shape[1])
    return logits.gather(1, target.to(logits.device)[:, None])[:, 0]


def to_device(inputs, device: torch.device):
    if isinstance(inputs, Mapping):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    return inputs.to(device)


def finish(t: torch.Tensor) -> torch.Tensor:
    """Detached, contiguous, at least float32 precision."""
    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.contiguous()


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block; every module's own training flag is restored after (mixed modes included)."""
    if torch.is_inference_mode_enabled():
        C.fail("the call", "made with autograd available", "torch.inference_mode() active",
               "Attribution needs gradients: call it outside torch.inference_mode() (torch.no_grad() is fine).",
               error=RuntimeError)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def forward_from_layer(call: Callable[[], object], module: nn.Module, layer) -> tuple[object, torch.Tensor]:
    """Run ``call()`` with autograd off up to ``module`` and on after it; return (output, the layer's output).

    The layer's output is replaced by a leaf tensor that requires grad, so ``autograd.grad(score, leaf)`` stops
    there: nothing before the layer is recorded or differentiated. The model sees a clone of the leaf, so in-place
    operations downstream (``ReLU(inplace=True)``, ``out += identity``) cannot modify the recorded activation.
    """
    leaves: list[torch.Tensor] = []

    def hook(mod, args, output):
        first = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(first, torch.Tensor) or not first.is_floating_point():
            C.fail("layer", "a layer whose output is a float tensor (or a tuple starting with one)",
                   f"{layer!r} returning {type(first).__name__}", error=TypeError)
        leaf = first.detach().requires_grad_(True)
        leaves.append(leaf)
        torch.set_grad_enabled(True)  # record from here on; the enclosing no_grad() restores the caller's mode
        if not isinstance(output, (tuple, list)):
            return leaf.clone()
        rest = [leaf.clone(), *output[1:]]
        return type(output)(*rest) if hasattr(output, "_fields") else type(output)(rest)  # namedtuple or not

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            out = call()
    finally:
        handle.remove()
    if not leaves:
        C.fail("layer", "a layer that runs in the model's forward pass", f"{layer!r}, which never ran",
               "Pick a module the forward pass calls (a layer defined but unused, or one bypassed by the forward "
               "code, has no activation to attribute).")
    if len(leaves) > 1:
        C.fail("layer", "a layer that runs once per forward pass", f"{layer!r}, which ran {len(leaves)} times",
               "Its attribution would be ambiguous; pick a module that is not reused.")
    return out, leaves[0]


def layer_gradient(score: torch.Tensor, activation: torch.Tensor, layer) -> torch.Tensor:
    """d score.sum() / d activation, or a clear error when the logits do not depend on the layer."""
    grads = None
    if score.requires_grad:
        (grads,) = torch.autograd.grad(score.sum(), activation, allow_unused=True)
    if grads is None:
        C.fail("layer", "a layer the logits depend on", f"{layer!r}, which the logits do not depend on",
               "Pick a layer on the path from the inputs to the logits.")
    return grads
