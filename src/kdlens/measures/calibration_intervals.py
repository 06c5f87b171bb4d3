"""Bootstrap confidence intervals for calibration: one model's ECE, and the paired teacher-minus-student gap.

Paired means each resample draws the same examples for teacher and student, so the interval reflects the
difference between the models, not the noise of two independent samples.
"""

from __future__ import annotations

import torch

from kdlens import validation as C
from kdlens.measures.calibration import (
    BINNINGS,
    brier_per_example,
    check_calibration_inputs,
    ece_from_sums,
    nll_per_example,
    top_label,
    top_label_bin_sums,
    width_bin_index,
)
from kdlens.measures.resampling import Interval, bootstrap_indices, percentile_interval

MEASURES = ("ece", "nll", "brier")
_CHUNK_ELEMENTS = 4_000_000  # resample indices held at once


def _ece_replicates(probs, labels, idx: torch.Tensor, n_bins: int, binning: str, norm: str) -> torch.Tensor:
    """ECE of each resample; idx is (r, n). Width binning is vectorised over resamples."""
    if binning == "mass":
        reps = [ece_from_sums(*top_label_bin_sums(probs[row], labels[row], n_bins, "mass")[:3], norm)
                for row in idx]
        return torch.stack(reps)
    confidence, correct = top_label(probs, labels)
    bins = width_bin_index(confidence, n_bins)
    r = idx.shape[0]
    key = (bins[idx] + n_bins * torch.arange(r)[:, None]).flatten()  # (r * n,)
    size = r * n_bins
    count = torch.bincount(key, minlength=size).double().view(r, n_bins)
    conf_sum = torch.bincount(key, weights=confidence.double()[idx].flatten(), minlength=size).view(r, n_bins)
    hit_sum = torch.bincount(key, weights=correct.double()[idx].flatten(), minlength=size).view(r, n_bins)
    return ece_from_sums(count, conf_sum, hit_sum, norm)


def _identity(n: int) -> torch.Tensor:
    return torch.arange(n)[None, :]


def bootstrap_ece(probs, labels, n_bins: int = 15, binning: str = "width", norm: str = "l1",
                  n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval for the expected calibration error.

    Parameters
    ----------
    probs : (n, C) float probabilities; labels : (n,) int
    n_bins, binning, norm : as in :func:`expected_calibration_error`
    n_resamples : int, bootstrap resamples of the n examples (with replacement)
    level : float in (0, 1), e.g. 0.95
    seed : int, makes the interval reproducible

    Returns
    -------
    Interval(estimate, low, high, level); ``estimate`` is the ECE on all examples.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> probs = torch.softmax(torch.randn(500, 3, generator=g), -1)
    >>> labels = torch.randint(0, 3, (500,), generator=g)
    >>> ci = bootstrap_ece(probs, labels, n_resamples=200)
    >>> ci.low <= ci.estimate <= ci.high
    True
    """
    C.check_choice(binning, "binning", BINNINGS)
    level, n_resamples = C.check_level(level), C.check_resamples(n_resamples)
    p, y, n_bins = check_calibration_inputs(probs, labels, n_bins, binning, norm)
    p, y = p.cpu(), y.cpu()
    n = p.shape[0]
    estimate = float(_ece_replicates(p, y, _identity(n), n_bins, binning, norm)[0])
    reps = [_ece_replicates(p, y, idx, n_bins, binning, norm)
            for idx in bootstrap_indices(n, n_resamples, seed, max(1, _CHUNK_ELEMENTS // n))]
    return percentile_interval(estimate, torch.cat(reps), level)


def bootstrap_paired_difference(teacher_probs, student_probs, labels, measure: str = "ece", n_bins: int = 15,
                                n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """Paired-bootstrap interval for ``measure(teacher) - measure(student)`` on the same examples.

    A negative difference in ECE, NLL or Brier means the teacher is better calibrated than the student; an
    interval that excludes 0 says the gap is larger than resampling noise.

    Parameters
    ----------
    teacher_probs, student_probs : (n, C) float probabilities on the same examples
    labels : (n,) int
    measure : "ece" (equal-width, l1) | "nll" (nats) | "brier"
    n_bins : bins for ECE
    n_resamples, level, seed : as in :func:`bootstrap_ece`

    Returns
    -------
    Interval(estimate, low, high, level) of teacher minus student.

    Examples
    --------
    >>> import torch
    >>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    >>> bootstrap_paired_difference(probs, probs, torch.tensor([0, 1, 1, 1]), "nll", n_resamples=50).estimate
    0.0
    """
    C.check_choice(measure, "measure", MEASURES)
    level, n_resamples = C.check_level(level), C.check_resamples(n_resamples)
    n_bins = C.check_n_bins(n_bins)
    t = C.check_probs(teacher_probs, "teacher_probs")
    s = C.check_probs(student_probs, "student_probs")
    C.check_same_shape(t, s, "teacher_probs", "student_probs")
    y = C.check_labels(labels, t.shape[0], t.shape[1])
    t, s, y = t.cpu(), s.cpu(), y.cpu()
    n = t.shape[0]
    if measure == "ece":
        def replicates(idx):
            return (_ece_replicates(t, y, idx, n_bins, "width", "l1")
                    - _ece_replicates(s, y, idx, n_bins, "width", "l1"))
    else:
        per_example = nll_per_example if measure == "nll" else brier_per_example
        diff = per_example(t, y) - per_example(s, y)  # (n,) paired per-example differences

        def replicates(idx):
            return diff[idx].mean(dim=1)
    estimate = float(replicates(_identity(n))[0])
    reps = [replicates(idx) for idx in bootstrap_indices(n, n_resamples, seed, max(1, _CHUNK_ELEMENTS // n))]
    return percentile_interval(estimate, torch.cat(reps), level)

