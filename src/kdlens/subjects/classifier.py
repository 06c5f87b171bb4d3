"""What kdlens needs from an image (or any tensor) classifier: logits, and named-layer activations on demand.

Layers are named by ``model.named_modules()`` paths (``"features.3"``, ``"layer2.1.conv1"``), the names
torchdistill and TransformerLens users know; a DDP/DataParallel ``module.`` prefix is accepted either way.
Activations are captured by forward hooks that are always removed, even when the forward pass raises.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from kdlens import validation as C


class Classifier:
    """A model that maps a batch of inputs to (batch, n_classes) logits.

    Parameters
    ----------
    model : nn.Module whose forward returns logits (or a tuple/dict whose first value / ``"logits"`` is the logits)
    name : str, how reports refer to it

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> subject = Classifier(net, "toy")
    >>> with subject.capture(["2"]) as acts:
    ...     logits = subject.model(torch.randn(5, 4))
    >>> acts["2"].shape, logits.shape
    (torch.Size([5, 8]), torch.Size([5, 3]))
    """

    def __init__(self, model: nn.Module, name: str = "model") -> None:
        if not isinstance(model, nn.Module):
            C.fail("model", "a torch.nn.Module returning logits", type(model).__name__, error=TypeError)
        if not isinstance(name, str):
            C.fail("name", "a str (how reports refer to the model)", type(name).__name__, error=TypeError)
        self.model = model
        self.name = name

    @property
    def layer_names(self) -> list[str]:
        """Every addressable layer, in ``named_modules()`` order (the root module, named "", excluded)."""
        return [name for name, _ in self.model.named_modules() if name]

    @property
    def device(self) -> torch.device:
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def resolve(self, layer: str) -> nn.Module:
        """The module at ``layer``; accepts names with or without a DDP ``module.`` prefix."""
        if not isinstance(layer, str):
            C.fail("layer", "a named_modules() name (a str)", type(layer).__name__, error=TypeError)
        modules = dict(self.model.named_modules())
        for candidate in (layer, f"module.{layer}", layer.removeprefix("module.")):
            if candidate and candidate in modules:
                return modules[candidate]
        names = self.layer_names
        close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
        hint = f"Did you mean {', '.join(map(repr, close))}?" if close else ""
        listing = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
        C.fail("layer", f"a layer of {self.name} ({listing})", repr(layer), hint, error=KeyError)

    @contextmanager
    def capture(self, layers: Sequence[str], detach: bool = True) -> Iterator[dict[str, torch.Tensor]]:
        """Record the outputs of ``layers`` during forward passes inside the block.

        The dict is filled as the model runs; a layer called twice keeps its last output. ``detach=False`` keeps
        the autograd graph (for feature losses and GradCAM). Hooks are removed on exit, whatever happens.
        """
        detach = C.check_bool(detach, "detach")
        if isinstance(layers, str):
            layers = [layers]
        targets = {layer: self.resolve(layer) for layer in layers}
        captured: dict[str, torch.Tensor] = {}
        handles = []

        def hook_for(layer: str):
            def hook(module, inputs, output):
                output = output[0] if isinstance(output, (tuple, list)) else output
                captured[layer] = output.detach() if detach else output

            return hook

        try:
            for layer, module in targets.items():
                handles.append(module.register_forward_hook(hook_for(layer)))
            yield captured
        finally:
            for handle in handles:
                handle.remove()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of the model in its current mode, with autograd as the caller has it."""
        out = self.model(inputs)
        if isinstance(out, dict):
            out = out["logits"]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            C.fail(f"{self.name}(inputs)", "(batch, n_classes) logits",
                   f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}",
                   "Wrap the model so its forward returns logits.")
        return out

    @torch.no_grad()
    def logits(self, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """(n, n_classes) logits in eval mode, without gradients; the model's training mode is restored after."""
        inputs, batch_size = _check_inputs(inputs), C.check_int(batch_size, "batch_size", 1)
        was_training = self.model.training
        self.model.eval()
        try:
            device = self.device
            return torch.cat([self.forward(chunk.to(device)).float().cpu() for chunk in inputs.split(batch_size)])
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def run(self, inputs: torch.Tensor, layers: Sequence[str] = (), batch_size: int = 512):
        """Logits and the activations of ``layers`` (a name or a list) for every input, in eval mode; returns
        (logits, dict)."""
        inputs, batch_size = _check_inputs(inputs), C.check_int(batch_size, "batch_size", 1)
        if isinstance(layers, str):
            layers = [layers]
        was_training = self.model.training
        self.model.eval()
        logits, acts = [], {layer: [] for layer in layers}
        try:
            device = self.device
            for chunk in inputs.split(batch_size):
                with self.capture(layers) as captured:
                    logits.append(self.forward(chunk.to(device)).float().cpu())
                for layer in layers:
                    acts[layer].append(captured[layer].float().cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(logits), {layer: torch.cat(parts) for layer, parts in acts.items()}


def _check_inputs(inputs) -> torch.Tensor:
    """A non-empty (n, ...) tensor, finite where it holds floats (token ids are integers and pass as they are)."""
    if not isinstance(inputs, torch.Tensor):
        C.fail("inputs", "a torch.Tensor batch (examples along dim 0)", type(inputs).__name__,
               "Convert it with torch.as_tensor(...) first.", error=TypeError)
    if inputs.ndim < 1 or inputs.shape[0] < 1:
        C.fail("inputs", "a non-empty batch of shape (n, ...)", f"shape {tuple(inputs.shape)}")
    if inputs.is_floating_point():
        bad = ~torch.isfinite(inputs.reshape(inputs.shape[0], -1)).all(1)  # (n,)
        if bool(bad.any()):
            C.fail("inputs", "finite", f"NaN or inf in {int(bad.sum())} of {inputs.shape[0]} examples (the first "
                   f"is {int(bad.nonzero()[0])})", "Clean or drop those examples before running the model.")
    return inputs
