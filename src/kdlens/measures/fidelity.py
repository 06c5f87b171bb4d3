"""Fidelity of a student to its teacher: top-1 agreement and divergences between their predictive distributions.

All divergences are in nats and computed in float64 from logits (log-softmax, never log of a softmax), so a
confident teacher cannot turn a finite divergence into ``inf`` by float32 underflow.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from kdlens import validation as C

REDUCTIONS = ("mean", "none")


def _pair(teacher_logits, student_logits) -> tuple[torch.Tensor, torch.Tensor]:
    t = C.check_logits(teacher_logits, "teacher_logits")
    s = C.check_logits(student_logits, "student_logits")
    C.check_same_shape(t, s, "teacher_logits", "student_logits")
    return t, s


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.log_softmax(logits.double() / temperature, dim=-1)  # (n, C)


def _reduce(values: torch.Tensor, reduction: str):
    if reduction == "mean":
        return float(values.mean())
    return values


def _agreement_update(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    matches = (teacher_logits.argmax(-1) == student_logits.argmax(-1)).sum()
    return matches, teacher_logits.shape[0]


def agreement(teacher_logits, student_logits, reduction: str = "mean"):
    """Top-1 agreement: how often the student's argmax equals the teacher's.

    Parameters
    ----------
    teacher_logits, student_logits : (n, C) float tensors or arrays
        Scores of the two models on the same n examples (logits or probabilities: only the argmax is used).
    reduction : "mean" | "none"
        "mean" returns the fraction in [0, 1]; "none" a (n,) bool tensor, True where the two agree.

    Examples
    --------
    >>> import torch
    >>> agreement(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    0.5
    """
    C.check_choice(reduction, "reduction", REDUCTIONS)
    t, s = _pair(teacher_logits, student_logits)
    if reduction == "none":
        return t.argmax(-1) == s.argmax(-1)
    matches, total = _agreement_update(t, s)
    return float(matches) / total


def kl_divergence(teacher_logits, student_logits, temperature: float = 1.0, reverse: bool = False,
                  reduction: str = "mean"):
    """KL(p_teacher || p_student) in nats; with ``reverse=True``, KL(p_student || p_teacher).

    ``p = softmax(logits / temperature)``. The forward direction is the one Hinton-style distillation minimises
    (mass-covering); the reverse direction is mode-seeking (MiniLLM, GKD). This is the divergence itself, without
    the ``temperature**2`` gradient-scale factor a distillation *loss* adds.

    Parameters
    ----------
    teacher_logits, student_logits : (n, C) float
    temperature : float > 0
    reverse : bool
    reduction : "mean" | "none"
        "mean" returns a float (mean over examples); "none" a (n,) float64 tensor.

    Examples
    --------
    >>> import torch
    >>> z = torch.tensor([[1.0, 2.0, 3.0]])
    >>> kl_divergence(z, z)
    0.0
    """
    C.check_choice(reduction, "reduction", REDUCTIONS)
    temperature = C.check_positive(temperature, "temperature")
    t, s = _pair(teacher_logits, student_logits)
    log_p, log_q = _log_probs(t, temperature), _log_probs(s, temperature)
    if reverse:
        log_p, log_q = log_q, log_p
    per_example = (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0.0)  # (n,); clamp: rounding below 0
    return _reduce(per_example, reduction)


def js_divergence(teacher_logits, student_logits, temperature: float = 1.0, reduction: str = "mean"):
    """Jensen-Shannon divergence in nats, in [0, ln 2]: ``(KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2``.

    Symmetric in teacher and student. Parameters as in :func:`kl_divergence`.

    Examples
    --------
    >>> import torch, math
    >>> round(js_divergence(torch.tensor([[50.0, 0.0]]), torch.tensor([[0.0, 50.0]])) / math.log(2), 6)
    1.0
    """
    C.check_choice(reduction, "reduction", REDUCTIONS)
    temperature = C.check_positive(temperature, "temperature")
    t, s = _pair(teacher_logits, student_logits)
    log_p, log_q = _log_probs(t, temperature), _log_probs(s, temperature)
    log_m = torch.logaddexp(log_p, log_q) - torch.log(torch.tensor(2.0, dtype=torch.float64))
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1)
    per_example = (0.5 * (kl_pm + kl_qm)).clamp_min(0.0)  # (n,)
    return _reduce(per_example, reduction)


def total_variation(teacher_logits, student_logits, temperature: float = 1.0, reduction: str = "mean"):
    """Total variation distance ``sum_k |p_k - q_k| / 2``, in [0, 1]. Parameters as in :func:`kl_divergence`.

    Examples
    --------
    >>> import torch
    >>> total_variation(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]]))
    0.0
    """
    C.check_choice(reduction, "reduction", REDUCTIONS)
    temperature = C.check_positive(temperature, "temperature")
    t, s = _pair(teacher_logits, student_logits)
    p, q = _log_probs(t, temperature).exp(), _log_probs(s, temperature).exp()
    per_example = 0.5 * (p - q).abs().sum(-1)  # (n,)
    return _reduce(per_example, reduction)


class Agreement(Metric):
    """Streaming top-1 agreement between teacher and student; ``update(teacher_logits, student_logits)`` per batch.

    Shares its update with :func:`agreement`; counts are summed across processes under torch.distributed.

    Examples
    --------
    >>> import torch
    >>> metric = Agreement()
    >>> metric.update(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    >>> metric.update(torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, 0.0]]))
    >>> float(metric.compute())
    0.5
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("matches", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, teacher_logits, student_logits) -> None:
        t, s = _pair(teacher_logits, student_logits)
        matches, total = _agreement_update(t, s)
        self.matches += matches.to(self.matches.device)
        self.total += total

    def compute(self) -> torch.Tensor:
        if int(self.total) == 0:
            C.fail("Agreement", "updated with at least one batch before compute()", "no batches")
        return self.matches.double() / self.total
