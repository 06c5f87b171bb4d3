"""Losses on logits: Hinton KD (forward KL at a temperature), reverse KL, generalized JSD, hard-label
cross-entropy and a calibration penalty. Logits are (B, C); divergences are in nats."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdlens.distill.losses.common import (
    CALIBRATION_KINDS,
    check_choice,
    check_logits,
    check_temperature,
    check_tensor,
    reduce,
)
from kdlens.validation import fail


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.log_softmax(logits / temperature, dim=-1)  # (B, C)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0,
            reduction: str = "mean", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Hinton et al. (2015) knowledge distillation: ``T^2 KL(softmax(t / T) || softmax(s / T))``.

    The temperature T is the logit smoothing: T > 1 flattens both distributions so the teacher's small
    probabilities ("dark knowledge") carry signal. The T^2 factor keeps the gradient's scale roughly independent
    of T (Hinton et al. 2015, sec. 2), so the term can be mixed with a hard-label loss at a fixed weight.

    Parameters
    ----------
    student_logits : (B, C) float
    teacher_logits : (B, C) float
    temperature : float > 0
    reduction : "mean" | "sum" | "none"
    mask : (B,) bool or float weights, optional

    Returns
    -------
    Scalar tensor (or (B,) for ``reduction="none"``) in nats, >= 0: KL summed over classes, averaged over
    examples. With "mean" and no mask it equals
    ``F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="batchmean", log_target=True) * T**2``.

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[1.0, 2.0, 3.0]])
    >>> float(kd_loss(z, z, temperature=4.0))
    0.0
    """
    check_logits(student_logits, teacher_logits)
    temperature = check_temperature(temperature)
    log_p_s, log_p_t = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    # F.kl_div(input, target) computes KL(target || input): the argument order is the reverse of the paper's
    # KL(p_teacher || p_student), and the input must already be log-probabilities.
    per_example = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(-1)  # (B,)
    return reduce(per_example * temperature**2, reduction, mask)


def reverse_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                    reduction: str = "mean", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reverse KL ``T^2 KL(softmax(s / T) || softmax(t / T))``: mode-seeking (MiniLLM, Gu et al. 2024).

    Where :func:`kd_loss` makes the student cover all of the teacher's mass, this direction lets it put its mass on
    the teacher's main modes and ignore the rest. Parameters and returns as in :func:`kd_loss`.

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[1.0, 2.0, 3.0]])
    >>> float(reverse_kl_loss(z, z))
    0.0
    """
    check_logits(student_logits, teacher_logits)
    temperature = check_temperature(temperature)
    log_p_s, log_p_t = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    # KL(target || input) in PyTorch's order: the student is the target here
    per_example = F.kl_div(log_p_t, log_p_s, reduction="none", log_target=True).sum(-1)  # (B,)
    return reduce(per_example * temperature**2, reduction, mask)


def generalized_jsd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                         temperature: float = 1.0, reduction: str = "mean",
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024, eq. 1), times ``T^2``.

    With p_t, p_s the tempered teacher and student distributions and the mixture ``m = beta p_t + (1 - beta) p_s``::

        JSD_beta = beta KL(p_t || m) + (1 - beta) KL(p_s || m)            for 0 < beta < 1

    This is the convention of the paper and of TRL's ``GKDTrainer.generalized_jsd_loss`` (same mixture, same
    weights). JSD_beta itself vanishes at both ends (m becomes one of the two distributions), so, as TRL does, the
    endpoints are defined by the limits that carry information::

        beta = 0:  KL(p_t || p_s)  (forward KL, = kd_loss)      = lim JSD_beta / beta         as beta -> 0
        beta = 1:  KL(p_s || p_t)  (reverse KL, = reverse_kl_loss) = lim JSD_beta / (1 - beta) as beta -> 1

    so small beta behaves like forward KL and beta near 1 like reverse KL, but the loss's *scale* jumps at the
    endpoints: for 0 < beta < 1 it is at most ``h(beta) T^2`` with h the binary entropy (ln 2 at beta = 0.5), while
    the KL endpoints are unbounded. Retune the term's weight when moving beta to or from 0 or 1.

    Parameters
    ----------
    student_logits, teacher_logits : (B, C) float
    beta : float in [0, 1], the teacher's weight in the mixture
    temperature : float > 0
    reduction : "mean" | "sum" | "none"
    mask : (B,) bool or float weights, optional

    Returns
    -------
    Scalar tensor (or (B,)) in nats, >= 0; symmetric in student and teacher at beta = 0.5.
    Unlike TRL's "batchmean" on (B, T, V) logits, the divergence is summed over classes and averaged over the B rows.

    Examples
    --------
    >>> import torch, math
    >>> s, t = torch.tensor([[30.0, 0.0]]), torch.tensor([[0.0, 30.0]])
    >>> round(float(generalized_jsd_loss(s, t, beta=0.5)) / math.log(2), 6)
    1.0
    """
    check_logits(student_logits, teacher_logits)
    temperature = check_temperature(temperature)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        fail("beta", "a number in [0, 1]", repr(beta), error=TypeError)
    if not 0.0 <= beta <= 1.0:
        fail("beta", "in [0, 1] (the teacher's weight in the mixture)", repr(beta),
             "0 is forward KL, 1 is reverse KL, 0.5 the symmetric Jensen-Shannon divergence.")
    log_p_s, log_p_t = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    # F.kl_div(input, target, log_target=True) = KL(target || input), elementwise over classes
    if beta == 0:
        per_class = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True)  # KL(p_t || p_s)
    elif beta == 1:
        per_class = F.kl_div(log_p_t, log_p_s, reduction="none", log_target=True)  # KL(p_s || p_t)
    else:
        # log m = logsumexp(log beta + log p_t, log(1 - beta) + log p_s): stable where the probabilities underflow
        log_m = torch.logaddexp(log_p_t + math.log(beta), log_p_s + math.log1p(-beta))  # (B, C)
        kl_t = F.kl_div(log_m, log_p_t, reduction="none", log_target=True)  # KL(p_t || m)
        kl_s = F.kl_div(log_m, log_p_s, reduction="none", log_target=True)  # KL(p_s || m)
        per_class = beta * kl_t + (1.0 - beta) * kl_s
    per_example = per_class.sum(-1)  # (B,)
    return reduce(per_example * temperature**2, reduction, mask)


def _check_labels(student_logits, labels) -> None:
    check_tensor(student_logits, "student_logits")
    if student_logits.ndim != 2:
        fail("student_logits", "2-D of shape (B, n_classes)", f"shape {tuple(student_logits.shape)}")
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        got = f"dtype {labels.dtype}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        fail("labels", "an integer tensor of class indices", got,
             "Pass class indices (labels.long()), not one-hot rows or scores.", error=TypeError)
    if labels.shape != student_logits.shape[:1]:
        fail("labels", f"of shape ({student_logits.shape[0]},), one class index per example",
             f"shape {tuple(labels.shape)}", "Labels and logits must cover the same batch in the same order.")
    n_classes = student_logits.shape[1]
    # one synchronising check for both the logits and the labels (an out-of-range label is a device assert on GPU)
    if not bool(torch.isfinite(student_logits).all() & (labels >= 0).all() & (labels < n_classes).all()):
        if not bool(torch.isfinite(student_logits).all()):
            fail("student_logits", "finite", "NaN or inf values", "Check the model for overflow.")
        fail("labels", f"class indices in [0, {n_classes - 1}]",
             f"values in [{int(labels.min())}, {int(labels.max())}]", "Each label must index a column of the logits.")


def hard_label_loss(student_logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                    reduction: str = "mean", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy with the ground-truth labels (optionally label-smoothed, Szegedy et al. 2016).

    Parameters
    ----------
    student_logits : (B, C) float
    labels : (B,) int class indices in [0, C)
    label_smoothing : float in [0, 1)
    reduction, mask : as in :func:`kd_loss`

    Returns
    -------
    Scalar tensor (or (B,)) in nats; equals ``F.cross_entropy(student_logits, labels, label_smoothing=...)``.
    """
    _check_labels(student_logits, labels)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= label_smoothing < 1.0:
        fail("label_smoothing", "a number in [0, 1)", repr(label_smoothing), "0.1 is the common choice.")
    per_example = F.cross_entropy(student_logits, labels.long(), reduction="none", label_smoothing=label_smoothing)
    return reduce(per_example, reduction, mask)


def calibration_penalty(student_logits: torch.Tensor, labels: torch.Tensor, kind: str = "mdca") -> torch.Tensor:
    """A differentiable batch-level calibration penalty on the student's softmax probabilities p (B, C).

    ``"mdca"``, Multi-class Difference in Confidence and Accuracy (Hebbalaguppe et al., CVPR 2022, eq. 2)::

        (1 / C) sum_j | mean_i p_ij - mean_i 1[y_i = j] |

    ``"dca"``, Difference between Confidence and Accuracy (Liang et al. 2020)::

        | mean_i max_j p_ij - mean_i 1[argmax_j p_ij = y_i] |

    (the accuracy term is a constant for the gradient; only the confidence moves).

    Parameters
    ----------
    student_logits : (B, C) float
    labels : (B,) int class indices in [0, C)
    kind : "mdca" | "dca"

    Returns
    -------
    Scalar tensor in [0, 1] (a difference of probabilities, unitless). It compares batch averages, so it takes
    no ``reduction`` or ``mask``; add it to a per-example loss such as :func:`hard_label_loss`.
    """
    check_choice(kind, "kind", CALIBRATION_KINDS)
    _check_labels(student_logits, labels)
    probs = student_logits.softmax(-1)  # (B, C)
    if kind == "mdca":
        frequency = F.one_hot(labels.long(), probs.shape[1]).to(probs.dtype).mean(0)  # (C,)
        return (probs.mean(0) - frequency).abs().mean()
    confidence, predicted = probs.max(-1)  # (B,), (B,)
    accuracy = (predicted == labels).to(probs.dtype).mean()
    return (confidence.mean() - accuracy).abs()
