"""A crosscoder over two models' activations (model-diffing: which features did distillation create?), its two
training objectives, its metrics, and its training on the one training loop (:mod:`kdlens.distill.loop`).

One dictionary of ``L`` latents reads and writes both models: ``f = relu(sum_m x^m W_enc^m + b_enc)``, and model m's
reconstruction is ``x_hat^m = f W_dec^m + b_dec^m``. Each model has its own encoder and decoder, so their widths may
differ. A latent's decoder rows ``d_j^m`` say how much it writes into each model: the relative decoder norm
``r_j = ||d_j^B|| / (||d_j^A|| + ||d_j^B||)`` is near 0 for a latent only model A uses, near 1 for one only model B
uses, in between for a shared one.

Objectives:

- ``l1``: squared error summed over the models + ``lambda_t * sum_j f_j * sum_m ||d_j^m||``, with ``lambda_t``
  warmed up linearly from 0 over the first 5% of the steps;
- ``batchtopk`` (Minder et al. 2025): scores ``s_j = f_j * sum_m ||d_j^m||``; the ``k * B`` largest scores of the
  batch are kept and the rest zeroed; at inference a latent fires when its score exceeds ``threshold``, an
  exponential moving average (``THRESHOLD_DECAY``) of the smallest score kept in each training batch. The AuxK term
  (Gao et al. 2024) lets the ``aux_k`` largest dead latents reconstruct what the live ones left, with weight
  ``aux_weight``, so dead latents get gradient.

Units: activations as given (scale them to mean norm sqrt(d) before training; :func:`scale_to_sqrt_d`), losses per
example (summed over dimensions and models, averaged over the batch).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from kdlens import validation as V

THRESHOLD_DECAY = 0.99  # the inference threshold's moving average: about the last 100 batches
EVAL_ROWS = 16_384  # pairs (a fixed seeded sample) each epoch's FVE and L0 are measured on
DEAD_AFTER = 10_000_000  # examples a latent may go without firing before it counts as dead (Gao et al.'s window)


class Crosscoder(nn.Module):
    """A crosscoder of ``n_latents`` latents over models of widths ``widths`` (one entry per model, in order).

    ``forward(xs)`` takes one (B, d_m) float tensor per model and returns the latents (B, L) and the
    reconstructions (one (B, d_m) per model).
    """

    def __init__(self, widths: list[int], n_latents: int, kind: Literal["l1", "batchtopk"] = "batchtopk",
                 k: int = 32, seed: int = 0) -> None:
        super().__init__()
        if len(widths) != 2 or any(not isinstance(d, int) or d < 1 for d in widths):
            V.fail("widths", "two positive ints (each model's activation width)", repr(widths))
        V.check_choice(kind, "kind", ("l1", "batchtopk"))
        self.kind, self.k, self.widths = kind, V.check_int(k, "k", 1), list(widths)
        generator = torch.Generator().manual_seed(seed)
        decoders = []
        for d in widths:  # unit-norm random decoder rows (0.1 per model, as Anthropic's), encoders their transpose
            weight = torch.randn(n_latents, d, generator=generator)
            decoders.append(weight / weight.norm(dim=1, keepdim=True) * 0.1)
        self.W_dec = nn.ParameterList([nn.Parameter(w) for w in decoders])  # (L, d_m) each
        self.W_enc = nn.ParameterList([nn.Parameter(w.T.clone()) for w in decoders])  # (d_m, L) each
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_dec = nn.ParameterList([nn.Parameter(torch.zeros(d)) for d in widths])
        self.register_buffer("threshold", torch.tensor(math.nan))  # batchtopk at inference (NaN: not trained yet)
        self.register_buffer("since_fired", torch.zeros(n_latents))  # examples since each latent last fired

    @property
    def n_latents(self) -> int:
        return self.b_enc.shape[0]

    def decoder_norms(self) -> torch.Tensor:
        """(models, L): ``||d_j^m||``."""
        return torch.stack([w.norm(dim=1) for w in self.W_dec])

    def preactivations(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """(B, L): ``relu(sum_m x^m W_enc^m + b_enc)``."""
        self._check(xs)
        return torch.relu(sum(x @ w for x, w in zip(xs, self.W_enc, strict=True)) + self.b_enc)

    def encode(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """(B, L) latents: in training, BatchTopK's top ``k * B`` scores of the batch (and the threshold updated);
        at inference, the latents whose score passes the threshold; with ``l1``, the pre-activations."""
        return self.sparsify(self.preactivations(xs))

    def sparsify(self, f: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` from the (B, L) pre-activations."""
        if self.kind == "l1":
            return f
        scores = f * self.decoder_norms().sum(0)  # (B, L)
        if self.training:
            kept = scores.flatten().topk(min(self.k * f.shape[0], scores.numel())).values
            smallest = kept[-1].detach()
            with torch.no_grad():
                self.threshold.copy_(smallest if torch.isnan(self.threshold)
                                     else THRESHOLD_DECAY * self.threshold + (1 - THRESHOLD_DECAY) * smallest)
            return f * (scores >= smallest)
        if torch.isnan(self.threshold):
            V.fail("crosscoder", "trained (its inference threshold is set by training)", "an untrained one")
        return f * (scores > self.threshold)

    def decode(self, f: torch.Tensor) -> list[torch.Tensor]:
        """Each model's reconstruction (B, d_m) from latents (B, L)."""
        return [f @ w + b for w, b in zip(self.W_dec, self.b_dec, strict=True)]

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        f = self.encode(xs)
        return f, self.decode(f)

    def _check(self, xs: list[torch.Tensor]) -> None:
        if len(xs) != len(self.widths):
            V.fail("xs", f"one activation tensor per model ({len(self.widths)})", str(len(xs)))
        for m, (x, d) in enumerate(zip(xs, self.widths, strict=True)):
            if x.ndim != 2 or x.shape[1] != d or x.shape[0] != xs[0].shape[0]:
                V.fail(f"xs[{m}]", f"a (B, {d}) tensor with the batch of xs[0]", str(tuple(x.shape)))


def reconstruction_error(xs: list[torch.Tensor], xhats: list[torch.Tensor]) -> torch.Tensor:
    """() the squared error summed over dimensions and models, averaged over the batch."""
    return sum(((x - xh) ** 2).sum(-1).mean() for x, xh in zip(xs, xhats, strict=True))


def l1_loss(model: Crosscoder, xs: list[torch.Tensor], weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """The L1 crosscoder's loss on a batch: squared error + ``weight * sum_j f_j * sum_m ||d_j^m||`` (per example),
    and its terms; updates the count of examples since each latent fired."""
    f, xhats = model(xs)
    error = reconstruction_error(xs, xhats)
    count_firing(model, f)
    sparsity = (f * model.decoder_norms().sum(0)).sum(-1).mean()
    return error + weight * sparsity, {"mse": float(error.detach()), "sparsity": float(sparsity.detach())}


def batchtopk_loss(model: Crosscoder, xs: list[torch.Tensor], aux_k: int = 512, aux_weight: float = 1 / 32,
                   dead_after: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """BatchTopK's loss on a batch: squared error + ``aux_weight`` x AuxK (the dead latents' best ``aux_k``
    reconstructing the residual, as a share of the residual's squared norm), and its terms; updates the count of
    examples since each latent fired. A latent is dead once ``dead_after`` examples (default ``DEAD_AFTER``) passed
    since it last fired."""
    pre = model.preactivations(xs)  # (B, L), also the dead latents' candidates below
    f = model.sparsify(pre)
    xhats = model.decode(f)
    error = reconstruction_error(xs, xhats)
    count_firing(model, f)
    dead = model.since_fired >= (DEAD_AFTER if dead_after is None else dead_after)
    aux = torch.zeros(())
    if dead.any():
        candidates = pre * dead  # (B, L): the dead latents only
        top = candidates.topk(min(aux_k, int(dead.sum())), dim=-1)
        sparse = torch.zeros_like(candidates).scatter(-1, top.indices, top.values)
        residuals = [(x - xh).detach() for x, xh in zip(xs, xhats, strict=True)]
        guesses = [sparse @ w for w in model.W_dec]
        aux = (sum(((r - g) ** 2).sum(-1).mean() for r, g in zip(residuals, guesses, strict=True))
               / sum((r ** 2).sum(-1).mean() for r in residuals).clamp_min(1e-12))
    return error + aux_weight * aux, {"mse": float(error.detach()), "aux": float(aux.detach()),
                                      "dead": float(dead.float().mean())}


def count_firing(model: Crosscoder, f: torch.Tensor) -> None:
    """Update ``model.since_fired`` (examples since each latent last fired) with a batch's (B, L) latents."""
    with torch.no_grad():
        model.since_fired.add_(f.shape[0]).masked_fill_((f > 0).any(0), 0)


def fraction_of_variance_explained(x: torch.Tensor, xhat: torch.Tensor) -> float:
    """``1 - E||x - x_hat||^2 / sum_d Var(x_d)``: the error against the variance about the mean of each dimension
    (not about zero, not per token), for (N, d) activations and their reconstruction."""
    variance = x.double().var(0, unbiased=False).sum()
    return float(1 - ((x.double() - xhat.double()) ** 2).sum(-1).mean() / variance)


def relative_decoder_norms(model: Crosscoder) -> torch.Tensor:
    """(L,) ``r_j = ||d_j^1|| / (||d_j^0|| + ||d_j^1||)``: 0 for a latent of model 0 alone, 1 of model 1 alone."""
    norms = model.decoder_norms().detach()
    return norms[1] / (norms[0] + norms[1]).clamp_min(1e-12)


def decoder_cosines(model: Crosscoder) -> torch.Tensor:
    """(L,) the cosine between each latent's two decoder rows (models of one width only): near 1 where a shared
    latent writes the same direction into both models."""
    if model.widths[0] != model.widths[1]:
        V.fail("crosscoder", "models of one width (decoder rows in one space)", f"widths {model.widths}",
               "Compare shared latents by what they fire on instead.")
    a, b = (w.detach() for w in model.W_dec)
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def latent_classes(r: torch.Tensor, low: float = 0.3, high: float = 0.7) -> list[str]:
    """Each latent's class from its relative decoder norm: ``first`` (r < ``low``: model 0's alone), ``second``
    (r > ``high``), else ``shared``."""
    return ["first" if v < low else "second" if v > high else "shared" for v in r.tolist()]


def scale_to_sqrt_d(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(N, d) activations scaled so their mean norm is sqrt(d), and the scale (multiply by it to scale; divide a
    reconstruction by it to return to the model's units)."""
    scale = math.sqrt(x.shape[1]) / float(x.double().norm(dim=1).mean())
    return x * scale, scale


def dead_window(n: int) -> int:
    """The firing window a latent is dead after on a data set of ``n`` pairs: ``DEAD_AFTER`` examples, or one epoch
    where the set is smaller (a latent silent for a whole pass over the data is dead on it)."""
    return min(DEAD_AFTER, n)


def train(pairs: list[torch.Tensor], n_latents: int, run_dir: str | Path, config, kind: str = "batchtopk",
          k: int = 32, l1_weight: float = 1.0, on_epoch=None) -> tuple[Crosscoder, list[dict]]:
    """Train a crosscoder on paired activations (``pairs``: one (N, d_m) tensor per model, row i of each the same
    token) on the training loop (``config``: a :class:`~kdlens.distill.config.TrainConfig`; checkpoints and exact
    resume in ``run_dir``); returns the model (in eval mode) and the per-epoch history, with each model's FVE, the
    L0 on a fixed sample of ``EVAL_ROWS`` pairs and the dead share (latents silent for :func:`dead_window` pairs).
    ``on_epoch(figures)``, when given, hears each epoch's evaluation (FVEs, L0, dead share) as it is measured."""
    from kdlens.distill.loop import Step, Training, run

    n = pairs[0].shape[0]
    if any(p.shape[0] != n for p in pairs):
        V.fail("pairs", "one row per token in every model's tensor", str([tuple(p.shape) for p in pairs]))
    model = Crosscoder([p.shape[1] for p in pairs], n_latents, kind, k, seed=config.seed)
    steps = max(1, n // config.batch_size)
    total = steps * config.epochs
    window = dead_window(n)

    at_epoch = [0]  # the epoch being trained, for on_epoch

    def step(index: torch.Tensor, _, at) -> Step:
        at_epoch[0] = at.epoch + 1
        xs = [p[index] for p in pairs]
        if kind == "l1":
            warm = min(1.0, (at.global_step + 1) / max(1, int(0.05 * total)))
            loss, terms = l1_loss(model, xs, l1_weight * warm)
        else:
            loss, terms = batchtopk_loss(model, xs, dead_after=window)
        return Step(loss, terms)

    held = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))[:EVAL_ROWS]
    sample = [p[held] for p in pairs]

    def evaluate() -> dict:
        model.eval()
        with torch.no_grad():
            f, xhats = model(sample)
        model.train()
        found = {**{f"fve_{m}": fraction_of_variance_explained(p, xh) for m, (p, xh) in
                   enumerate(zip(sample, xhats, strict=True))}, "l0": float((f > 0).float().sum(-1).mean()),
                "dead": float((model.since_fired >= window).float().mean())}
        if on_epoch is not None:
            on_epoch({"epoch": at_epoch[0], **found})
        return found

    model.train()
    training = Training(modules={"crosscoder": model},
                        fingerprint={"kind": kind, "k": k, "n_latents": n_latents, "widths": model.widths, "n": n,
                                     "l1_weight": l1_weight},
                        fingerprint_of="another crosscoder or data", steps_per_epoch=steps,
                        order=lambda seed: torch.randperm(n, generator=torch.Generator().manual_seed(seed)),
                        step=step, evaluate=evaluate, summary="mean", description="crosscoder")
    history = run(training, config, run_dir)
    return model.eval(), history
