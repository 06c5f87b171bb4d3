"""Calibration: does a model's confidence match how often it is right?

Bin-edge policy (one policy everywhere, functional and streaming): with ``n_bins`` equal-width bins the edges are
``k / n_bins`` (float64, correctly rounded) and bin ``k`` is the half-open interval ``(k/n_bins, (k+1)/n_bins]``,
except that a confidence of exactly 0 falls in the first bin. A confidence of exactly 1.0 therefore falls in the
last bin, never in a phantom bin ``n_bins``. Confidences are compared in float64 at their stored value.

All per-bin sums are float64, so a million float32 confidences give the same ECE as their float64 originals.

The bootstrap intervals (``calibration_intervals``) resample with the same pieces: :func:`top_label`,
:func:`width_bin_index`, :func:`top_label_bin_sums`, :func:`ece_from_sums`, the per-example scores and
:func:`check_calibration_inputs`.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from torchmetrics import Metric

from kdlens import validation as C

BINNINGS = ("width", "mass")
NORMS = ("l1", "l2", "max")


class ReliabilityCurve(NamedTuple):
    """Per-bin statistics of a reliability diagram; empty bins hold NaN confidence and accuracy."""

    confidence: torch.Tensor  # (n_bins,) float64, mean confidence of the examples in each bin
    accuracy: torch.Tensor  # (n_bins,) float64, fraction correct in each bin
    count: torch.Tensor  # (n_bins,) int64, examples in each bin
    edges: torch.Tensor  # (n_bins + 1,) float64; for mass binning, the confidences where bins meet

    def to_lists(self) -> dict[str, list]:
        """The curve as JSON-ready lists, an empty bin's NaN as None (JSON has no NaN)."""
        def listed(values: torch.Tensor) -> list:
            return [None if math.isnan(v) else v for v in values.tolist()]

        return {"confidence": listed(self.confidence), "accuracy": listed(self.accuracy),
                "count": self.count.tolist(), "edges": self.edges.tolist()}


def _width_edges(n_bins: int, device=None) -> torch.Tensor:
    return torch.arange(n_bins + 1, dtype=torch.float64, device=device) / n_bins  # (n_bins + 1,)


def width_bin_index(confidence: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Index of the (a, b] bin for each confidence; 0 goes to bin 0 and 1.0 to bin n_bins - 1.

    ``ceil(c * n_bins) - 1`` is the bin up to the rounding of the product; one comparison with the exact edges on
    each side moves the few values within an ulp of an edge to where the (a, b] policy puts them.
    """
    c = confidence.double()
    index = (c * n_bins).ceil_().long().clamp_(1, n_bins).sub_(1)
    lower = index.double() / n_bins  # == _width_edges(n_bins)[index]: the same correctly rounded k / n_bins
    index -= ((c <= lower) & (index > 0)).long()
    upper = (index + 1).double() / n_bins
    index += ((c > upper) & (index < n_bins - 1)).long()
    return index


def _bin_sums(index: torch.Tensor, confidence: torch.Tensor, correct: torch.Tensor, n_bins: int):
    """(count, confidence sum, correct sum) per bin, each (n_bins,) float64."""
    # One unweighted count over (correct, bin) pairs gives both the count and the correct sum, exactly.
    by_outcome = torch.bincount(index + n_bins * correct.long(), minlength=2 * n_bins).double().view(2, n_bins)
    conf_sum = torch.bincount(index, weights=confidence.double(), minlength=n_bins)
    return by_outcome.sum(0), conf_sum, by_outcome[1]


_ROWS_PER_CHUNK = 1 << 16  # max over a short last dim is ~1.6x faster on cache-sized chunks than in one call


def top_label(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-label confidence (n,) and whether the argmax (first maximum on ties) is the label, (n,) bool."""
    parts = [chunk.max(dim=-1) for chunk in probs.split(_ROWS_PER_CHUNK)]
    confidence = torch.cat([part.values for part in parts])
    prediction = torch.cat([part.indices for part in parts])
    return confidence, prediction == labels


def top_label_bin_sums(probs: torch.Tensor, labels: torch.Tensor, n_bins: int, binning: str = "width"):
    """Per-bin sums for top-label calibration: the one implementation behind ECE, the curve and the Metric."""
    confidence, correct = top_label(probs, labels)
    confidence = confidence.double()
    if binning == "width":
        index = width_bin_index(confidence, n_bins)
        return (*_bin_sums(index, confidence, correct, n_bins), _width_edges(n_bins, probs.device))
    order = torch.argsort(confidence)  # mass binning: n_bins groups of (near) equal size by rank
    index = torch.empty_like(order)
    index[order] = torch.div(torch.arange(order.numel(), device=order.device) * n_bins, order.numel(),
                             rounding_mode="floor")
    sums = _bin_sums(index, confidence, correct, n_bins)
    sorted_conf = confidence[order].double()
    bounds = torch.searchsorted(index[order], torch.arange(1, n_bins, device=order.device))
    inner = sorted_conf[bounds.clamp_max(order.numel() - 1)]
    edges = torch.cat([sorted_conf.new_zeros(1), inner, sorted_conf.new_ones(1)])
    return (*sums, edges)


def ece_from_sums(count: torch.Tensor, conf_sum: torch.Tensor, correct_sum: torch.Tensor, norm: str):
    """ECE from per-bin sums of shape (..., n_bins); returns a (...) float64 tensor. Empty bins weigh 0."""
    total = count.sum(-1, keepdim=True)
    gap = (correct_sum - conf_sum) / count.clamp_min(1)  # accuracy minus confidence per bin; 0 where empty
    weight = count / total
    if norm == "l1":
        return (weight * gap.abs()).sum(-1)
    if norm == "l2":
        return (weight * gap.square()).sum(-1).sqrt()
    return gap.abs().amax(-1)


def _ece_compute(count: torch.Tensor, conf_sum: torch.Tensor, correct_sum: torch.Tensor, norm: str) -> float:
    return float(ece_from_sums(count, conf_sum, correct_sum, norm))


def check_calibration_inputs(probs, labels, n_bins, binning="width", norm="l1"):
    """(probs, labels on probs' device, n_bins as int) once every argument of a top-label measure is checked."""
    n_bins = C.check_n_bins(n_bins)
    C.check_choice(binning, "binning", BINNINGS)
    C.check_choice(norm, "norm", NORMS)
    p = C.check_probs(probs, "probs")
    y = C.check_labels(labels, p.shape[0], p.shape[1])
    return p, y.to(p.device), n_bins


def expected_calibration_error(probs, labels, n_bins: int = 15, binning: str = "width", norm: str = "l1") -> float:
    """Top-label expected calibration error (Guo et al. 2017).

    ``ECE = sum_b (n_b / n) |acc_b - conf_b|`` for ``norm="l1"``; ``"l2"`` takes the root of the weighted mean
    squared gap; ``"max"`` the largest gap over non-empty bins (MCE). Bins follow the module's (a, b] policy.

    Parameters
    ----------
    probs : (n, C) float
        Probabilities (rows sum to 1). Labels may cover fewer classes than C.
    labels : (n,) int
        True class indices in [0, C).
    n_bins : int >= 1
    binning : "width" | "mass"
        Equal-width bins on [0, 1], or equal-count bins by confidence rank (ties split by rank).
    norm : "l1" | "l2" | "max"

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> import torch
    >>> probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    >>> round(expected_calibration_error(probs, torch.tensor([0, 1, 1]), n_bins=10), 6)
    0.333333
    """
    p, y, n_bins = check_calibration_inputs(probs, labels, n_bins, binning, norm)
    count, conf_sum, correct_sum, _ = top_label_bin_sums(p, y, n_bins, binning)
    return _ece_compute(count, conf_sum, correct_sum, norm)


def confidence_calibration_error(confidence, correct, n_bins: int = 15, norm: str = "l1") -> float:
    """ECE of confidences in being right, one per example: e.g. a language model's probability of the answer it
    generated, against whether that answer was correct.

    The same binning and sums as :func:`expected_calibration_error`: with ``confidence`` the top-label probability
    and ``correct`` whether the argmax is the label, the two agree exactly.

    Parameters
    ----------
    confidence : (n,) float in [0, 1]
    correct : (n,) bool (or 0/1)
    n_bins : int >= 1, equal-width bins with the module's (a, b] policy
    norm : "l1" | "l2" | "max"

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> import torch
    >>> round(confidence_calibration_error(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([True, False, True]),
    ...                                    n_bins=10), 6)
    0.333333
    """
    C.check_choice(norm, "norm", NORMS)
    count, conf_sum, correct_sum = _confidence_sums(confidence, correct, n_bins)
    return _ece_compute(count, conf_sum, correct_sum, norm)


def _confidence_sums(confidence, correct, n_bins: int):
    """Validated per-bin (count, confidence sum, correct sum) of one confidence per example."""
    n_bins = C.check_n_bins(n_bins)
    c = C.as_float(confidence, "confidence")
    if c.ndim != 1 or c.numel() == 0:
        C.fail("confidence", "a non-empty 1-D tensor (one confidence per example)", f"shape {tuple(c.shape)}")
    if not bool(torch.isfinite(c).all()) or float(c.min()) < 0 or float(c.max()) > 1:
        C.fail("confidence", "finite values in [0, 1]", f"values in [{float(c.min()):.3g}, {float(c.max()):.3g}]",
               "Pass probabilities (exp of a log-probability), not logits or log-probabilities.")
    ok = C.as_tensor(correct, "correct")
    if ok.dtype != torch.bool and not bool(((ok == 0) | (ok == 1)).all()):
        C.fail("correct", "bool or 0/1 values", f"dtype {ok.dtype} with other values")
    C.check_same_length(c, ok, "confidence", "correct")
    index = width_bin_index(c.double(), n_bins)
    return _bin_sums(index, c.double(), ok.bool().to(c.device), n_bins)


def confidence_reliability_curve(confidence, correct, n_bins: int = 15) -> ReliabilityCurve:
    """The reliability diagram's numbers for one confidence per example (the curve behind
    :func:`confidence_calibration_error`): per equal-width bin, mean confidence, accuracy and count.

    Parameters as in :func:`confidence_calibration_error`. Empty bins hold NaN confidence and accuracy; with
    top-label confidences it equals :func:`reliability_curve`.

    Examples
    --------
    >>> import torch
    >>> curve = confidence_reliability_curve(torch.tensor([0.9, 0.8, 0.3]), torch.tensor([1, 0, 0]), n_bins=2)
    >>> curve.count.tolist(), curve.accuracy.tolist()
    ([1, 2], [0.0, 0.5])
    """
    count, conf_sum, correct_sum = _confidence_sums(confidence, correct, n_bins)
    n_bins = int(count.numel())
    return ReliabilityCurve(conf_sum / count, correct_sum / count, count.long(), _width_edges(n_bins))


def reliability_curve(probs, labels, n_bins: int = 15, binning: str = "width") -> ReliabilityCurve:
    """Mean confidence, accuracy and count per bin: the numbers behind a reliability diagram.

    Parameters as in :func:`expected_calibration_error`. Empty bins hold NaN confidence and accuracy.

    Examples
    --------
    >>> import torch
    >>> curve = reliability_curve(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([0, 0]), n_bins=5)
    >>> curve.count.tolist()
    [0, 0, 0, 1, 1]
    >>> curve.accuracy.tolist()[3:]
    [0.0, 1.0]
    """
    p, y, n_bins = check_calibration_inputs(probs, labels, n_bins, binning)
    count, conf_sum, correct_sum, edges = top_label_bin_sums(p, y, n_bins, binning)
    return ReliabilityCurve(conf_sum / count, correct_sum / count, count.long(), edges)


def classwise_expected_calibration_error(probs, labels, n_bins: int = 15, norm: str = "l1") -> float:
    """Classwise ECE (Kull et al. 2019): the ECE of each class's probability ``p_k`` against ``1[y == k]``,
    averaged over all C classes (classes absent from ``labels`` included: their probabilities should be near 0).

    Parameters as in :func:`expected_calibration_error` (equal-width bins only). Returns a float in [0, 1].

    Examples
    --------
    >>> import torch
    >>> classwise_expected_calibration_error(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    0.0
    """
    p, y, n_bins = check_calibration_inputs(probs, labels, n_bins, "width", norm)
    n, n_classes = p.shape
    index = width_bin_index(p, n_bins) + n_bins * torch.arange(n_classes, device=p.device)  # (n, C)
    is_class = torch.zeros_like(p, dtype=torch.float64)
    is_class[torch.arange(n, device=p.device), y] = 1.0
    size = n_bins * n_classes
    count = torch.bincount(index.flatten(), minlength=size).double().view(n_classes, n_bins)
    conf_sum = torch.bincount(index.flatten(), weights=p.double().flatten(), minlength=size).view(n_classes, -1)
    hit_sum = torch.bincount(index.flatten(), weights=is_class.flatten(), minlength=size).view(n_classes, -1)
    per_class = [_ece_compute(count[k], conf_sum[k], hit_sum[k], norm) for k in range(n_classes)]
    return float(torch.tensor(per_class, dtype=torch.float64).mean())


def brier_per_example(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n,) float64 Brier score of each example; ``p`` (n, C) checked probabilities, ``y`` (n,) labels."""
    p = p.double()
    squared = p.square().sum(-1)
    p_true = p.gather(1, y[:, None]).squeeze(1)
    return squared - 2.0 * p_true + 1.0  # sum_k (p_k - 1[k = y])^2, (n,)


def nll_per_example(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n,) float64 negative log-likelihood of each example in nats; ``p`` (n, C) checked probabilities."""
    return -torch.log(p.double().gather(1, y[:, None]).squeeze(1))  # (n,)


def _scored(per_example, probs, labels, reduction: str):
    """Validate, score each example, reduce: the shared body of the proper scoring rules."""
    C.check_choice(reduction, "reduction", ("mean", "none"))
    p = C.check_probs(probs, "probs")
    y = C.check_labels(labels, p.shape[0], p.shape[1]).to(p.device)
    values = per_example(p, y)
    return float(values.mean()) if reduction == "mean" else values


def brier_score(probs, labels, reduction: str = "mean"):
    """Multi-class Brier score ``sum_k (p_k - 1[y = k])^2``, summed over classes, in [0, 2].

    Parameters
    ----------
    probs : (n, C) float probabilities
    labels : (n,) int
    reduction : "mean" (float) | "none" ((n,) float64 tensor)

    Examples
    --------
    >>> import torch
    >>> round(brier_score(torch.tensor([[0.5, 0.5]]), torch.tensor([0])), 6)
    0.5
    """
    return _scored(brier_per_example, probs, labels, reduction)


def negative_log_likelihood(probs, labels, reduction: str = "mean"):
    """Negative log-likelihood ``-log p_y`` in nats (float64).

    A probability of exactly 0 on the true class gives ``inf``: that is the true value, not an error. Pass
    ``logits.double().softmax(-1)`` if float32 underflow may have produced such zeros.

    Parameters as in :func:`brier_score`.

    Examples
    --------
    >>> import torch
    >>> round(negative_log_likelihood(torch.tensor([[0.5, 0.5]]), torch.tensor([0])), 6)
    0.693147
    """
    return _scored(nll_per_example, probs, labels, reduction)


def fit_temperature(logits, labels, bounds: tuple[float, float] = (0.01, 100.0), tol: float = 1e-10) -> float:
    """Temperature T minimising the NLL of ``softmax(logits / T)`` on held-out data (Guo et al. 2017).

    The NLL is convex in ``beta = 1 / T`` (log-sum-exp is convex and the rest is linear), so a safeguarded Newton
    iteration on beta finds the global optimum; gradient ``mean(E_p[z] - z_y)``, curvature ``mean(Var_p[z])``.
    Dividing by a positive T never changes an argmax.

    Parameters
    ----------
    logits : (n, C) float, held-out logits (not the ones you will evaluate on)
    labels : (n,) int
    bounds : (T_min, T_max); when the optimum lies outside, the nearest bound is returned with a warning

    Returns
    -------
    float, the temperature T > 0

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [4.0, 0.0]])
    >>> fit_temperature(z, torch.tensor([0, 1, 1, 0])) > 1.0   # over-confident logits get T > 1
    True
    """
    z = C.check_logits(logits, "logits").double()
    y = C.check_labels(labels, z.shape[0], z.shape[1]).to(z.device)
    t_min, t_max = (C.check_positive(b, "bounds") for b in bounds)
    if t_min >= t_max:
        C.fail("bounds", "(T_min, T_max) with T_min < T_max", repr(bounds))
    z_true = z.gather(1, y[:, None]).squeeze(1)

    def gradient_and_curvature(beta: float) -> tuple[float, float]:
        p = torch.softmax(beta * z, dim=-1)
        mean_z = (p * z).sum(-1)
        var_z = (p * z.square()).sum(-1) - mean_z.square()
        return float((mean_z - z_true).mean()), float(var_z.clamp_min(0).mean())

    lo, hi = 1.0 / t_max, 1.0 / t_min  # bracket on beta; the gradient increases with beta
    if gradient_and_curvature(lo)[0] >= 0:
        warnings.warn(f"fit_temperature: the optimum lies above T_max={t_max}; returning T_max.", stacklevel=2)
        return t_max
    if gradient_and_curvature(hi)[0] <= 0:
        warnings.warn(f"fit_temperature: the optimum lies below T_min={t_min}; returning T_min.", stacklevel=2)
        return t_min
    beta = min(max(1.0, lo), hi)
    for _ in range(200):
        grad, curv = gradient_and_curvature(beta)
        if abs(grad) < tol:
            break
        if grad > 0:
            hi = beta
        else:
            lo = beta
        step = beta - grad / curv if curv > 0 else float("nan")
        beta = step if lo <= step <= hi else 0.5 * (lo + hi)  # Newton inside the bracket, else bisect
        if hi - lo < tol * hi:
            break
    return 1.0 / beta


class CalibrationError(Metric):
    """Streaming top-label ECE with equal-width bins; ``update(probs, labels)`` per batch.

    Holds three (n_bins,) float64 sums, never the confidences themselves, so memory does not grow with the data;
    the sums add across processes under torch.distributed. Shares its update with
    :func:`expected_calibration_error` (mass binning needs every confidence and so has no streaming form).

    Examples
    --------
    >>> import torch
    >>> metric = CalibrationError(n_bins=10)
    >>> metric.update(torch.tensor([[0.9, 0.1], [0.8, 0.2]]), torch.tensor([0, 1]))
    >>> metric.update(torch.tensor([[0.3, 0.7]]), torch.tensor([1]))
    >>> round(float(metric.compute()), 6)
    0.333333
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, n_bins: int = 15, norm: str = "l1", **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_bins = C.check_n_bins(n_bins)
        self.norm = C.check_choice(norm, "norm", NORMS)
        for state in ("count", "conf_sum", "correct_sum"):
            self.add_state(state, default=torch.zeros(self.n_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs, labels) -> None:
        p, y, _ = check_calibration_inputs(probs, labels, self.n_bins, "width", self.norm)
        count, conf_sum, correct_sum, _ = top_label_bin_sums(p, y, self.n_bins, "width")
        self.count += count.to(self.count.device)
        self.conf_sum += conf_sum.to(self.count.device)
        self.correct_sum += correct_sum.to(self.count.device)

    def compute(self) -> torch.Tensor:
        if float(self.count.sum()) == 0:
            C.fail("CalibrationError", "updated with at least one batch before compute()", "no batches")
        return torch.tensor(_ece_compute(self.count, self.conf_sum, self.correct_sum, self.norm),
                            dtype=torch.float64)
