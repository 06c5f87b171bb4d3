"""Latent Scaling (Minder et al. 2025, "Overcoming Sparsity Artifacts in Crosscoders to Interpret Chat-Tuning",
arXiv 2504.02922): is a latent a crosscoder calls exclusive to one model really absent from the other?

A crosscoder's L1 (and, less so, BatchTopK) sparsity penalty rewards zeroing a latent's decoder row in the model
that needs it least, so a latent may look exclusive to its "owner" o while the "other" model p still holds it:

- Complete Shrinkage: p's activations contain the direction, but p's decoder row is (near) 0, so it stays in p's
  reconstruction error;
- Latent Decoupling: p reconstructs the same information through other latents.

For a latent j with direction ``d = d_j^o`` (the owner's decoder row, used for both models: their widths must be
equal) and activations ``f_j(x_i)`` over N tokens, the scale that best explains a target ``y`` (least squares) is

    beta(y) = argmin_b sum_i ||b f_j(x_i) d - y_i||^2 = sum_i f_j(x_i) <d, y_i> / (||d||^2 sum_i f_j(x_i)^2),

NaN when the latent never fires (or its direction is 0). The four targets, for m in {owner, other}:

- reconstruction ``y = x_hat^m``: the crosscoder's reconstruction of model m, every latent included;
- error ``y = x^m - (x_hat^m - f_j d_j^m)``: model m's activation minus its reconstruction without latent j's own
  term (the error plus latent j's contribution to model m).

The ratios ``nu_error = beta_error(other) / beta_error(owner)`` and ``nu_reconstruction = beta_reconstruction(other)
/ beta_reconstruction(owner)`` are near 0 for a genuinely exclusive latent (the other model holds its information
neither in its error nor through other latents) and near 1 where the other model has it as much as the owner.

Nothing here materialises (N, K, dim): ``<d, y_i>`` for the error target is ``<d, x_i - x_hat_i> + f_ij <d, d_j^m>``,
so every target reduces to (N, K) matrix products. Sums over tokens are float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics import Metric

from kdlens import validation as V
from kdlens.measures.merging import merge_states

TARGETS = ("reconstruction_owner", "reconstruction_other", "error_owner", "error_other")
LABELS = ("real", "artifact", "never fires")


def latent_betas(f, d, y) -> torch.Tensor:
    """The least-squares scale of each latent's term against a target: ``beta_k = sum_i f_ik <d_k, y_i> /
    (||d_k||^2 sum_i f_ik^2)``.

    Parameters
    ----------
    f : (N, K) float tensor, the activations of the K latents studied over N tokens
    d : (K, dim) float tensor, their directions
    y : (N, dim) float tensor (one target for every latent) or (N, K, dim) (one target per latent)

    Returns
    -------
    (K,) float64 tensor: NaN where a latent never fires (or its direction is 0).

    Examples
    --------
    >>> import torch
    >>> f = torch.tensor([[1.0], [2.0]])
    >>> d = torch.tensor([[1.0, 0.0]])
    >>> latent_betas(f, d, 0.5 * f * d).tolist()
    [0.5]
    """
    f, d, y = V.as_float(f, "f"), V.as_float(d, "d"), V.as_float(y, "y")
    V.check_ndim(f, "f", 2, "(N, K)")
    V.check_ndim(d, "d", 2, "(K, dim)")
    if d.shape[0] != f.shape[1]:
        V.fail("d", f"one direction per latent of `f` ({f.shape[1]} rows)", f"shape {tuple(d.shape)}")
    if y.shape not in ((f.shape[0], d.shape[1]), (f.shape[0], f.shape[1], d.shape[1])):
        V.fail("y", f"of shape (N, dim) = {(f.shape[0], d.shape[1])} or (N, K, dim) = {(*f.shape, d.shape[1])}",
               f"shape {tuple(y.shape)}")
    f, d, y = f.double(), d.double(), y.double()
    projections = y @ d.T if y.ndim == 2 else torch.einsum("nkd,kd->nk", y, d)  # (N, K): <d_k, y_ik>
    return (f * projections).sum(0) / ((d * d).sum(1) * (f * f).sum(0))


def latent_scaling(xs, xhats, f, W_dec, latents, owners) -> dict[str, torch.Tensor]:
    """The four betas and two ratios of Latent Scaling for the latents ``latents``, each exclusive to ``owners``.

    Parameters
    ----------
    xs : two (N, dim) float tensors, the models' activations (model 0 the base, model 1 the distilled one)
    xhats : two (N, dim) float tensors, the crosscoder's reconstructions of them (every latent, decoder bias
        included: ``crosscoder.decode(f)``)
    f : (N, L) float tensor, the crosscoder's latent activations (``crosscoder.encode(xs)``)
    W_dec : two (L, dim) float tensors, each model's decoder rows (``crosscoder.W_dec``)
    latents : (K,) int tensor or sequence, the latents studied, in [0, L)
    owners : (K,) int tensor or sequence of 0 or 1, the model each latent is exclusive to

    With a crosscoder ``cc`` in eval mode: ``f = cc.encode(xs)``, ``xhats = cc.decode(f)``, then
    ``latent_scaling(xs, xhats, f, cc.W_dec, latents, owners)``; over more tokens than fit at once, feed batches to
    :class:`LatentScaling`.

    Returns
    -------
    dict of (K,) float64 tensors: ``beta_reconstruction_owner``, ``beta_reconstruction_other``,
    ``beta_error_owner``, ``beta_error_other``, ``nu_reconstruction``, ``nu_error``. A beta is NaN where its latent
    never fires; a ratio is their IEEE quotient (NaN, or inf where the owner's beta is exactly 0).

    Examples
    --------
    >>> import torch
    >>> f = torch.tensor([[1.0], [2.0]])
    >>> W_dec = [torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])]  # latent 0: model 1's alone
    >>> xs = [torch.zeros(2, 2), f * W_dec[1]]  # model 0 lacks the direction too
    >>> out = latent_scaling(xs, [f @ w for w in W_dec], f, W_dec, [0], [1])
    >>> out["beta_error_owner"].tolist(), out["nu_error"].tolist(), out["nu_reconstruction"].tolist()
    ([1.0], [0.0], [0.0])
    """
    latents, owners = _check_latents(latents, owners)
    return _compute(*_update(*_check_batch(xs, xhats, f, W_dec, latents), latents, owners))


class LatentScaling(Metric):
    """Streaming :func:`latent_scaling`: ``update(xs, xhats, f, W_dec)`` per batch of tokens, ``compute()`` at the
    end; the states are float64 sums (``numerators`` (4, K) in the order of ``TARGETS``, ``denominators`` (K,):
    ``sum_i f_ik^2``), so shards and processes add (:meth:`merge`, :func:`~kdlens.measures.merge_states`).

    Parameters
    ----------
    latents : (K,) int tensor or sequence, the latents studied
    owners : (K,) int tensor or sequence of 0 or 1, the model each is exclusive to

    Examples
    --------
    >>> import torch
    >>> f = torch.tensor([[1.0, 2.0], [2.0, 0.0], [0.0, 1.0]])
    >>> W_dec = [torch.tensor([[0.0, 0.0], [0.0, 1.0]]), torch.eye(2)]  # latent 0: model 1's alone; 1: shared
    >>> xs = [f @ W_dec[1], f @ W_dec[1]]  # model 0 has latent 0's direction in its error: Complete Shrinkage
    >>> xhats = [f @ w for w in W_dec]
    >>> metric = LatentScaling([0, 1], [1, 1])
    >>> for rows in (slice(0, 2), slice(2, 3)):
    ...     metric.update([x[rows] for x in xs], [x[rows] for x in xhats], f[rows], W_dec)
    >>> out = metric.compute()
    >>> out["nu_error"].tolist(), out["nu_reconstruction"].tolist()
    ([1.0, 1.0], [0.0, 1.0])
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, latents, owners, **kwargs) -> None:
        super().__init__(**kwargs)
        self.latents, self.owners = _check_latents(latents, owners)
        k = self.latents.shape[0]
        self.add_state("numerators", default=torch.zeros(len(TARGETS), k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("denominators", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, xs, xhats, f, W_dec) -> None:
        """Add a batch of B tokens: ``xs``, ``xhats`` two (B, dim) each, ``f`` (B, L), ``W_dec`` two (L, dim)."""
        numerators, denominators = _update(*_check_batch(xs, xhats, f, W_dec, self.latents), self.latents, self.owners)
        self.numerators += numerators.to(self.numerators.device)
        self.denominators += denominators.to(self.denominators.device)

    def compute(self) -> dict[str, torch.Tensor]:
        """The betas and ratios of :func:`latent_scaling` over every token added (torchmetrics returns 0-d tensors
        when K = 1)."""
        return _compute(self.numerators, self.denominators)

    def merge(self, other: LatentScaling) -> LatentScaling:
        """This accumulator with ``other``'s sums added (the same latents and owners); returns itself.
        (As :func:`~kdlens.measures.merge_states`: a merged accumulator no longer syncs across processes.)"""
        if not isinstance(other, LatentScaling):
            V.fail("other", "a LatentScaling", type(other).__name__, error=TypeError)
        if not (torch.equal(other.latents, self.latents) and torch.equal(other.owners, self.owners)):
            V.fail("other", "an accumulator of the same latents and owners", "different ones",
                   "Merge only shards of one analysis.")
        return merge_states(self, [other.metric_state])


@dataclass(frozen=True)
class Exclusivity:
    """:func:`classify_exclusive`'s verdicts: ``labels`` (one of "real", "artifact", "never fires" per latent) and
    the thresholds each ratio was held to (``min(ceiling, the baseline's quantile)``)."""

    labels: list[str]
    threshold_error: float
    threshold_reconstruction: float

    def as_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return {"labels": list(self.labels), "threshold_error": self.threshold_error,
                "threshold_reconstruction": self.threshold_reconstruction}


def classify_exclusive(nu_error, nu_reconstruction, baseline_nu_error, baseline_nu_reconstruction,
                       ceiling: float = 0.5, quantile: float = 0.1) -> Exclusivity:
    """Sort latents a crosscoder calls exclusive into "real" and "artifact" by their Latent Scaling ratios.

    Each ratio has one threshold ``t = min(ceiling, q)``, where ``q`` is the ``quantile`` quantile of the same ratio
    over a baseline: an equal-size random sample of *shared* latents (their owner taken as model 1), run through
    :func:`latent_scaling` on the same data. A latent both models hold has ratios near 1; the baseline shows where
    such latents' ratios fall on this data (noise, scale differences between the models), so a latent counts as
    exclusive only when both its ratios fall below nearly all shared latents', and below ``ceiling`` in any case.
    A latent is "real" when ``nu_error < t_error`` and ``nu_reconstruction < t_reconstruction``, "never fires" when
    a ratio is NaN, else "artifact" (an infinite ratio, where the owner's beta is exactly 0, is one).

    Parameters
    ----------
    nu_error, nu_reconstruction : (K,) float tensors or arrays, the exclusive latents' ratios
    baseline_nu_error, baseline_nu_reconstruction : (K',) float, the shared baseline's ratios (non-finite values
        are left out; at least one must be finite)
    ceiling : float > 0, the largest threshold allowed
    quantile : float in [0, 1], the baseline quantile (linear interpolation, as ``numpy.quantile``)

    Returns
    -------
    Exclusivity: ``labels`` (list of K strings), ``threshold_error``, ``threshold_reconstruction``.

    Examples
    --------
    >>> import torch
    >>> shared = torch.tensor([0.8, 0.9, 1.0, 1.1])
    >>> verdict = classify_exclusive(torch.tensor([0.05, 0.9, float("nan")]), torch.tensor([0.1, 0.0, 0.2]),
    ...                              shared, shared)
    >>> verdict.labels, verdict.threshold_error
    (['real', 'artifact', 'never fires'], 0.5)
    """
    nu_error, nu_reconstruction = _ratios(nu_error, "nu_error"), _ratios(nu_reconstruction, "nu_reconstruction")
    if nu_error.shape != nu_reconstruction.shape:
        V.fail("nu_error` and `nu_reconstruction", "one value per latent each", f"{nu_error.size} and "
               f"{nu_reconstruction.size}", "Pass both ratios of the same latents, from one latent_scaling call.")
    ceiling = V.check_positive(ceiling, "ceiling")
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float, np.floating)) or not 0 <= quantile <= 1:
        V.fail("quantile", "a number in [0, 1]", repr(quantile), "0.1 holds exclusive latents to the lowest tenth.")
    thresholds = []
    for values, name in ((baseline_nu_error, "baseline_nu_error"),
                         (baseline_nu_reconstruction, "baseline_nu_reconstruction")):
        finite = _ratios(values, name)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            V.fail(name, "at least one finite ratio", "none", "Sample shared latents that fire on this data.")
        thresholds.append(min(ceiling, float(np.quantile(finite, quantile))))
    labels = ["never fires" if np.isnan(e) or np.isnan(r) else "real" if e < thresholds[0] and r < thresholds[1]
              else "artifact" for e, r in zip(nu_error.tolist(), nu_reconstruction.tolist(), strict=True)]
    return Exclusivity(labels, thresholds[0], thresholds[1])


def _ratios(x, name: str) -> np.ndarray:
    """(K,) float64 numpy copy of a 1-D float tensor or array."""
    t = V.as_float(x, name)
    V.check_ndim(t, name, 1, "(K,)")
    return t.cpu().double().numpy()


def _check_latents(latents, owners) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) int64 latents (non-negative) and owners (0 or 1), K >= 1, as CPU tensors."""
    out = []
    for value, name in ((latents, "latents"), (owners, "owners")):
        t = V.as_labels(torch.as_tensor(value) if isinstance(value, (list, tuple)) else value, name).cpu()
        if t.shape[0] < 1:
            V.fail(name, "non-empty", "0 entries", "Study at least one latent.")
        out.append(t)
    latents, owners = out
    if latents.shape != owners.shape:
        V.fail("latents` and `owners", "one owner per latent", f"{latents.shape[0]} and {owners.shape[0]}")
    if int(latents.min()) < 0:
        V.fail("latents", "latent indices >= 0", f"minimum {int(latents.min())}")
    if not bool(((owners == 0) | (owners == 1)).all()):
        V.fail("owners", "0 (the first model) or 1 (the second) for each latent",
               f"values {sorted(set(owners.tolist()))}", "Take the owner from the latent's class: first -> 0, "
               "second -> 1 (for shared latents in a baseline, 1).")
    return latents, owners


def _check_batch(xs, xhats, f, W_dec, latents: torch.Tensor):
    """The batch's tensors, checked: two models of one width, B tokens, L latents covering ``latents``."""
    f = V.as_float(f, "f")
    V.check_ndim(f, "f", 2, "(B, L)")
    V.check_finite(f, "f")
    n, n_latents = f.shape
    if int(latents.max()) >= n_latents:
        V.fail("latents", f"latent indices below L = {n_latents} (the columns of `f`)", f"maximum {int(latents.max())}")
    groups = []
    for value, name, shape_doc in ((xs, "xs", "(B, dim)"), (xhats, "xhats", "(B, dim)"), (W_dec, "W_dec", "(L, dim)")):
        if not isinstance(value, (list, tuple, torch.nn.ParameterList)):
            V.fail(name, f"a list of two tensors, one {shape_doc} per model", type(value).__name__, error=TypeError)
        if len(value) != 2:
            V.fail(name, f"two tensors, one {shape_doc} per model", f"{len(value)}")
        tensors = [V.as_float(t, f"{name}[{m}]") for m, t in enumerate(value)]
        for m, t in enumerate(tensors):
            V.check_ndim(t, f"{name}[{m}]", 2, shape_doc)
        groups.append(tensors)
    xs, xhats, W_dec = groups
    width = xs[0].shape[1]
    if any(t.shape[1] != width for group in groups for t in group):
        V.fail("xs", "two models of one width (Latent Scaling projects both on the owner's decoder row)",
               f"widths {[t.shape[1] for t in xs]}, reconstructions {[t.shape[1] for t in xhats]}, decoders "
               f"{[t.shape[1] for t in W_dec]}", "Crosscoders over models of different widths have no shared space "
               "for a direction; compare such latents by what they fire on.")
    for m in range(2):
        if xs[m].shape[0] != n or xhats[m].shape[0] != n:
            V.fail(f"xs[{m}]` and `xhats[{m}]", f"one row per token of `f` ({n})",
                   f"{xs[m].shape[0]} and {xhats[m].shape[0]}", "Pass the batch's activations, reconstructions "
                   "and latents for the same tokens.")
        if W_dec[m].shape[0] != n_latents:
            V.fail(f"W_dec[{m}]", f"one row per latent of `f` ({n_latents})", f"shape {tuple(W_dec[m].shape)}")
        V.check_finite(xs[m], f"xs[{m}]")
        V.check_finite(xhats[m], f"xhats[{m}]")
    return xs, xhats, f, W_dec


def _update(xs, xhats, f, W_dec, latents, owners) -> tuple[torch.Tensor, torch.Tensor]:
    """(4, K) float64 sums ``sum_i f_ik <d_k, y_ik> / ||d_k||^2`` for the targets in the order of ``TARGETS``, and
    (K,) ``sum_i f_ik^2``, over one batch of checked tensors."""
    dtype = torch.float64 if f.dtype == torch.float64 else torch.float32  # half precision: project in float32
    latents, is_owner_0 = latents.to(f.device), (owners == 0).to(f.device)
    rows = [w[latents].to(dtype) for w in W_dec]  # (K, dim) each: latent j's row in each model
    d = torch.where(is_owner_0[:, None], rows[0], rows[1])  # (K, dim): the owner's row
    scaled = d / (d * d).sum(1, keepdim=True)  # (K, dim): d / ||d||^2 (NaN for a zero row: beta undefined)
    fk = f[:, latents].to(dtype)  # (B, K)
    errors, reconstructions = [], []
    for x, xhat, row in zip(xs, xhats, rows, strict=True):
        x, xhat = x.to(dtype), xhat.to(dtype)
        own_term = fk * (scaled * row).sum(1)  # (B, K): f_j <d, d_j^m> / ||d||^2, latent j's term in model m
        errors.append((x - xhat) @ scaled.T + own_term)  # (B, K): <d, x - (x_hat - f_j d_j^m)> / ||d||^2
        reconstructions.append(xhat @ scaled.T)  # (B, K): <d, x_hat> / ||d||^2
    pick = is_owner_0[None, :]
    projections = [torch.where(pick, reconstructions[0], reconstructions[1]),  # in the order of TARGETS
                   torch.where(pick, reconstructions[1], reconstructions[0]),
                   torch.where(pick, errors[0], errors[1]), torch.where(pick, errors[1], errors[0])]
    fk = fk.double()
    return torch.stack([(fk * p.double()).sum(0) for p in projections]), (fk * fk).sum(0)


def _compute(numerators: torch.Tensor, denominators: torch.Tensor) -> dict[str, torch.Tensor]:
    betas = numerators / denominators  # (4, K): 0 / 0 = NaN where a latent never fired
    out = {f"beta_{name}": beta for name, beta in zip(TARGETS, betas, strict=True)}
    out["nu_reconstruction"] = out["beta_reconstruction_other"] / out["beta_reconstruction_owner"]
    out["nu_error"] = out["beta_error_other"] / out["beta_error_owner"]
    return out
