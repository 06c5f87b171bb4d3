"""Gradient attributions in input space (input x gradient, integrated gradients) and per token (embedding x gradient).

Conventions (targets, eval mode, hooks, devices, raw unnormalised values) are those of
:mod:`kdlens.probes.attribution`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from kdlens import validation as C
from kdlens.probes.attribution_common import (
    check_batch,
    check_model,
    check_target,
    check_target_range,
    evaluating,
    finish,
    forward_from_layer,
    layer_gradient,
    output_logits,
    resolve_layer,
    select,
    to_device,
)

IG_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")
# Expanded inputs per forward/backward pass when internal_batch_size is None: as many as hold 2**23 input
# elements (32 MiB in float32; 2,730 CIFAR-size images, 55 at 224 x 224), at least one. Larger chunks were no
# faster on the benchmark's MLP (0.67-0.73 s from 1,024 to 12,800 rows).
_AUTO_CHUNK_ELEMENTS = 2**23


def _float_inputs(inputs, device: torch.device) -> torch.Tensor:
    """(B, ...) finite float inputs on ``device``."""
    x = C.as_tensor(inputs, "inputs")
    if not x.is_floating_point():
        C.fail("inputs", "a floating-point tensor (gradients are taken with respect to it)", f"dtype {x.dtype}",
               "Pass float inputs; for token ids attribute an embedding layer with EmbeddingXGradient.",
               error=TypeError)
    check_batch(x)
    C.check_finite(x, "inputs")
    return x.to(device)


class InputXGradient:
    """Input x gradient (Shrikumar et al. 2016): ``inputs * d score / d inputs``, the first-order Taylor term.

    Equals captum's ``InputXGradient(model).attribute(inputs, target)``.

    Parameters
    ----------
    model : nn.Module returning (B, n_classes) logits (or a tuple / dict / ``.logits`` holding them), or a Classifier

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(4, 3))
    >>> InputXGradient(net).attribute(torch.ones(2, 4), target=0).shape
    torch.Size([2, 4])
    """

    def __init__(self, model: nn.Module) -> None:
        self.subject = check_model(model)
        self.model = self.subject.model

    def attribute(self, inputs: torch.Tensor, target) -> torch.Tensor:
        """Attributions of the shape of ``inputs`` (B, ...), signed, in score units, on the model's device."""
        x = _float_inputs(inputs, self.subject.device).detach().requires_grad_(True)
        targets = check_target(target, x.shape[0])
        with evaluating(self.model), torch.enable_grad():
            score = select(output_logits(self.model(x)), targets)  # (B,)
            (grads,) = torch.autograd.grad(score.sum(), x)
        return finish(x.detach() * grads)


def quadrature(method: str, n_steps: int) -> tuple[list[float], list[float]]:
    """(alphas, weights) of ``n_steps`` points on [0, 1], exactly as captum builds them.

    Gauss-Legendre nodes and weights from numpy's ``leggauss`` mapped from [-1, 1]; Riemann points from
    ``torch.linspace`` in the default dtype (float32, as captum), weights ``1 / n`` (halved at both ends for the
    trapezoid).
    """
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return (0.5 * (1 + nodes)).tolist(), (0.5 * weights).tolist()
    n = n_steps
    weights = [1 / n] * n
    rule = method.removeprefix("riemann_")
    if rule == "trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
    start, end = {"trapezoid": (0, 1), "left": (0, 1 - 1 / n), "right": (1 / n, 1),
                  "middle": (1 / (2 * n), 1 - 1 / (2 * n))}[rule]
    return torch.linspace(start, end, n).tolist(), weights


class IntegratedGradients:
    """Integrated gradients (Sundararajan et al., ICML 2017, eq. 1) of the target logit, path from a baseline.

    ``IG_i(x) = (x_i - x'_i) * sum_s w_s d score / d x_i at x' + alpha_s (x - x')``, with captum's quadrature
    points and weights for each ``method``, so values equal captum's ``IntegratedGradients(model).attribute(inputs,
    target=..., baselines=..., n_steps=..., method=...)``. Completeness: the attributions of an example sum to
    ``f(x) - f(x')`` up to the quadrature error (``return_convergence_delta`` reports it).

    All ``n_steps * B`` interpolated inputs go through the model in chunks of at most ``internal_batch_size``, one
    forward and one ``torch.autograd.grad`` per chunk, the quadrature weights folded into the backward pass.

    Parameters
    ----------
    model : nn.Module returning (B, n_classes) logits (or a tuple / dict / ``.logits`` holding them), or a Classifier
    n_steps : int >= 1 (>= 2 for the Riemann rules), points on the path
    method : "gausslegendre" (default), "riemann_trapezoid", "riemann_left", "riemann_right" or "riemann_middle"
    internal_batch_size : int, optional
        Expanded inputs per pass; bounds memory (the model's activations for that many inputs). ``None``: as many
        as hold 2**23 input elements (32 MiB of float32 inputs: 2,730 images of 3 x 32 x 32, 55 of 3 x 224 x 224);
        lower it for models whose activations are large.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    >>> x = torch.randn(2, 4, dtype=torch.float64)
    >>> attr, delta = IntegratedGradients(net).attribute(x, target=1, return_convergence_delta=True)
    >>> attr.shape, bool(delta.abs().max() < 1e-6)
    (torch.Size([2, 4]), True)
    """

    def __init__(self, model: nn.Module, n_steps: int = 50, method: str = "gausslegendre",
                 internal_batch_size: int | None = None) -> None:
        self.subject = check_model(model)
        self.model = self.subject.model
        C.check_choice(method, "method", IG_METHODS)
        lowest = 1 if method == "gausslegendre" else 2
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < lowest:
            C.fail("n_steps", f"an integer >= {lowest} for method={method!r}", repr(n_steps),
                   "50 steps of Gauss-Legendre are usually within 1% of completeness.")
        if internal_batch_size is not None and (isinstance(internal_batch_size, bool) or not isinstance(
                internal_batch_size, (int, np.integer)) or internal_batch_size < 1):
            C.fail("internal_batch_size", "None or a positive integer", repr(internal_batch_size))
        self.n_steps, self.method, self.internal_batch_size = int(n_steps), method, internal_batch_size

    def attribute(self, inputs: torch.Tensor, target, baselines=None, return_convergence_delta: bool = False):
        """Attributions for a batch.

        Parameters
        ----------
        inputs : (B, ...) float, finite
        target : int, or (B,) int tensor or list
        baselines : None (zeros), a finite float, or a finite tensor broadcastable to ``inputs`` ((B, ...) or one
            (1, ...) / (...) baseline for all)
        return_convergence_delta : bool, also return ``sum(attributions) - (f(x) - f(x'))`` per example

        Returns
        -------
        (B, ...) attributions of the inputs' shape, signed, in score units, on the model's device; with
        ``return_convergence_delta``, a tuple (attributions, (B,) delta).
        """
        return_convergence_delta = C.check_bool(return_convergence_delta, "return_convergence_delta")
        x = _float_inputs(inputs, self.subject.device).detach()
        n, feature_shape = x.shape[0], x.shape[1:]
        targets = check_target(target, n)
        base = self._baselines(baselines, x)
        diff = x - base  # (B, ...)
        alphas, weights = quadrature(self.method, self.n_steps)
        alphas = torch.tensor(alphas, dtype=x.dtype, device=x.device)  # (S,)
        weights = torch.tensor(weights, dtype=x.dtype, device=x.device)  # (S,)
        rows = self.internal_batch_size or max(1, _AUTO_CHUNK_ELEMENTS // max(1, feature_shape.numel()))
        examples = min(n, rows)  # examples per chunk
        steps = max(1, rows // examples)  # path points per chunk
        ones = (1,) * len(feature_shape)
        total = torch.zeros_like(x)  # (B, ...) sum_s w_s grad f(x_s)
        with evaluating(self.model), torch.enable_grad():
            for e0 in range(0, n, examples):
                b, d, t = base[e0:e0 + examples], diff[e0:e0 + examples], targets[e0:e0 + examples]
                for s0 in range(0, self.n_steps, steps):
                    a = alphas[s0:s0 + steps]
                    k = a.shape[0]
                    # step-major like captum: rows [s * m + i] hold example i at point s, (k * m, ...)
                    path = torch.addcmul(b, a.view(k, 1, *ones), d)  # x' + alpha (x - x'), (k, m, ...)
                    path = path.view(k * b.shape[0], *feature_shape).requires_grad_(True)
                    score = select(output_logits(self.model(path)), t.repeat(k))  # (k * m,)
                    seed = weights[s0:s0 + k].repeat_interleave(b.shape[0]).to(score.dtype)
                    (grads,) = torch.autograd.grad(score, path, grad_outputs=seed)
                    total[e0:e0 + examples] += grads.view(k, b.shape[0], *feature_shape).sum(0)
            attributions = total * diff
            if not return_convergence_delta:
                return finish(attributions)
            with torch.no_grad():
                f_x, f_base = self._scores(x, targets, rows), self._scores(base, targets, rows)  # (B,) each
            delta = attributions.flatten(1).sum(1) - (f_x - f_base)
        return finish(attributions), finish(delta)

    def _scores(self, x: torch.Tensor, targets: torch.Tensor, rows: int) -> torch.Tensor:
        """(B,) target logits at ``x``, in chunks of ``rows``."""
        return torch.cat([select(output_logits(self.model(x[i:i + rows])), targets[i:i + rows])
                          for i in range(0, x.shape[0], rows)])

    @staticmethod
    def _baselines(baselines, x: torch.Tensor) -> torch.Tensor:
        if baselines is None:
            return torch.zeros_like(x)
        if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
            if not math.isfinite(baselines):
                C.fail("baselines", "None, a finite number or a finite tensor", repr(baselines),
                       "None (zeros, the default) is the usual baseline; a mean input is another.")
            return torch.full_like(x, float(baselines))
        b = C.as_float(baselines, "baselines").to(device=x.device, dtype=x.dtype)
        C.check_finite(b, "baselines")  # in the inputs' dtype: a float64 baseline may overflow float32
        if b.ndim == x.ndim - 1:
            b = b[None]
        try:
            ok = torch.broadcast_shapes(b.shape, x.shape) == x.shape
        except RuntimeError:
            ok = False
        if not ok:
            C.fail("baselines", f"broadcastable to the inputs' shape {tuple(x.shape)}", f"shape {tuple(b.shape)}",
                   "Pass one baseline per example (B, ...) or one for all (...).")
        return b.expand_as(x)


class EmbeddingXGradient:
    """Embedding x gradient per token: ``sum_D E[b, t] * d score / d E[b, t]`` for the output E of an embedding layer.

    For sequence models. The score is a logit of the model's output: for (B, C) classifier logits, the target
    class; for (B, T, V) language-model logits, the target token's logit at ``position`` (the next-token
    prediction made there).

    Parameters
    ----------
    model : nn.Module taking token ids (``model(ids)``) or keyword tensors (``model(**inputs)``, Hugging Face style),
        returning logits (a tensor, ``.logits`` or a dict's "logits")
    layer : str or nn.Module, the embedding layer, whose output is (B, T, D) (Hugging Face:
        ``model.get_input_embeddings()``, e.g. "model.embed_tokens")

    Examples
    --------
    >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
    >>> EmbeddingXGradient(net, "0").attribute(torch.tensor([[1, 2, 3]]), target=1).shape
    torch.Size([1, 3])
    """

    def __init__(self, model: nn.Module, layer: str | nn.Module) -> None:
        self.subject = check_model(model)
        self.model = self.subject.model
        self.layer = layer
        self.module = resolve_layer(self.subject, layer)

    def attribute(self, inputs, target, position: int | torch.Tensor = -1) -> torch.Tensor:
        """Token attributions for a batch.

        Parameters
        ----------
        inputs : (B, T) token ids, or a dict of tensors (input_ids, attention_mask, ...) passed as ``model(**inputs)``;
            when ``layer`` is an ``nn.Embedding``, the ids it receives must be int64 or int32 and in
            [0, num_embeddings) (checked before it runs: a TypeError or a ValueError)
        target : int, or (B,) int tensor or list: class indices for (B, C) logits, token ids for (B, T, V) logits
        position : int or (B,) int tensor, the position whose (B, T, V) logits are explained (default -1, the last:
            the next token); ignored for (B, C) logits. With right-padded batches pass each example's last real
            position, ``attention_mask.sum(1) - 1``.

        Returns
        -------
        (B, T) signed, one value per token of the embedding layer's sequence, in score units, on the model's device.
        """
        n = check_batch(inputs)
        targets = check_target(target, n)
        inputs = to_device(inputs, self.subject.device)
        call = (lambda: self.model(**inputs)) if isinstance(inputs, dict) else (lambda: self.model(inputs))
        with evaluating(self.model), torch.enable_grad(), self._checking_ids():
            out, embedding = forward_from_layer(call, self.module, self.layer)
            if embedding.ndim != 3 or embedding.shape[0] != n:
                C.fail("layer", f"an embedding layer with (B={n}, T, D) outputs",
                       f"{self.layer!r} with outputs of shape {tuple(embedding.shape)}")
            logits = output_logits(out, allow_sequence=True)
            if logits.ndim == 3:
                logits = self._at(logits, position)  # (B, V)
                check_target_range(targets, logits.shape[1], "tokens in its vocabulary")
            score = select(logits, targets)  # (B,)
            grads = layer_gradient(score, embedding, self.layer)  # (B, T, D)
        return finish((embedding.detach() * grads).sum(-1))

    @contextmanager
    def _checking_ids(self) -> Iterator[None]:
        """Check the ids an ``nn.Embedding`` layer receives before it runs (no-op for other layers)."""
        if not isinstance(self.module, nn.Embedding):
            yield
            return

        def check(module: nn.Embedding, args: tuple) -> None:
            if args and isinstance(args[0], torch.Tensor):
                _check_token_ids(args[0], module.num_embeddings, self.layer)

        handle = self.module.register_forward_pre_hook(check)
        try:
            yield
        finally:
            handle.remove()

    @staticmethod
    def _at(logits: torch.Tensor, position) -> torch.Tensor:
        n, length = logits.shape[:2]
        if isinstance(position, bool) or not isinstance(position, (int, np.integer, torch.Tensor)):
            C.fail("position", "an int or a (B,) integer tensor", repr(position), error=TypeError)
        p = torch.as_tensor(position, device=logits.device)
        if p.is_floating_point() or p.ndim > 1 or (p.ndim == 1 and p.shape[0] != n):
            C.fail("position", f"an int or a ({n},) integer tensor", f"{p.dtype} of shape {tuple(p.shape)}")
        if bool((p < -length).any()) or bool((p >= length).any()):
            C.fail("position", f"positions in [-{length}, {length - 1}] (the sequences have {length} tokens)",
                   f"values in [{int(p.min())}, {int(p.max())}]")
        if p.ndim == 0:
            return logits[:, int(p)]
        return logits[torch.arange(n, device=logits.device), p.long()]


def _check_token_ids(ids: torch.Tensor, vocabulary: int, layer) -> None:
    """(B, T) ids an embedding of ``vocabulary`` rows can look up: int64 or int32 (as nn.Embedding), in range."""
    if ids.dtype not in (torch.int64, torch.int32):
        C.fail("inputs", "integer token ids (int64 or int32)", f"dtype {ids.dtype}",
               "Pass the tokenizer's ids, e.g. ids.long() (not embeddings or scores).", error=TypeError)
    if ids.numel():
        lo, hi = torch.aminmax(ids)
        if int(lo) < 0 or int(hi) >= vocabulary:
            C.fail("inputs", f"token ids in [0, {vocabulary - 1}] (embedding layer {layer!r} has {vocabulary} rows)",
                   f"ids in [{int(lo)}, {int(hi)}]", "Encode the texts with the tokenizer the model was trained with.")
