"""Losses on one layer's activations from each model: FitNets hints (with a learned projector), attention
transfer, relational KD (distance and angle), similarity preservation and CKA alignment."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlens.distill.losses.common import (
    EPS,
    PROJECTOR_KINDS,
    check_batch_size,
    check_choice,
    check_features,
    flatten,
    pool_to_common,
    reduce,
)
from kdlens.validation import fail


class FeatureProjector(nn.Module):
    """FitNets regressor (Romero et al. 2015): maps a student feature to its teacher layer's width.

    ``kind="conv"``: 1x1 convolution + BatchNorm2d, for (B, C_s, H, W) maps -> (B, C_t, H, W).
    ``kind="linear"``: a linear layer on the last dimension, for (B, D_s) or (B, T, D_s) -> (B, D_t) or (B, T, D_t).

    Parameters
    ----------
    width_student, width_teacher : int > 0, channels (conv) or feature size (linear)
    kind : "conv" | "linear"

    Examples
    --------
    >>> import torch
    >>> FeatureProjector(4, 8, kind="conv")(torch.zeros(2, 4, 5, 5)).shape
    torch.Size([2, 8, 5, 5])
    """

    def __init__(self, width_student: int, width_teacher: int, kind: str = "conv") -> None:
        super().__init__()
        check_choice(kind, "kind", PROJECTOR_KINDS)
        for value, name in ((width_student, "width_student"), (width_teacher, "width_teacher")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, "a positive integer", repr(value))
        self.kind, self.width_student, self.width_teacher = kind, width_student, width_teacher
        if kind == "conv":
            self.net = nn.Sequential(nn.Conv2d(width_student, width_teacher, kernel_size=1, bias=False),
                                     nn.BatchNorm2d(width_teacher))
        else:
            self.net = nn.Linear(width_student, width_teacher)

    def forward(self, student_feature: torch.Tensor) -> torch.Tensor:
        if self.kind == "conv":
            ok = student_feature.ndim == 4 and student_feature.shape[1] == self.width_student
            expected = f"(B, {self.width_student}, H, W)"
        else:
            ok = student_feature.ndim in (2, 3) and student_feature.shape[-1] == self.width_student
            expected = f"(B, {self.width_student}) or (B, T, {self.width_student})"
        if not ok:
            fail("student_feature", f"of shape {expected} for this {self.kind} projector",
                 f"shape {tuple(student_feature.shape)}", "Build the projector from the layer's actual output shape.")
        return self.net(student_feature)


def fitnet_loss(projected_student: torch.Tensor, teacher_feature: torch.Tensor, reduction: str = "mean",
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """FitNets hint loss (Romero et al. 2015, eq. 3): mean squared error between the projected student feature and
    the teacher's ("hint") feature.

    Parameters
    ----------
    projected_student : (B, C, Hs, Ws), (B, D) or (B, T, D) float, already at the teacher's width
        (pass the student feature through a :class:`FeatureProjector`)
    teacher_feature : same shape, except that conv maps may differ in spatial size: the larger is
        adaptive-average-pooled to the smaller
    reduction, mask : as in :func:`kd_loss`

    Returns
    -------
    Scalar tensor (or (B,)): the squared error averaged over each example's elements (in the features' squared
    units), then reduced over examples; "mean" equals ``F.mse_loss`` on the (pooled) features.
    """
    check_features(projected_student, teacher_feature, "projected_student", "teacher_feature")
    s, t = projected_student, teacher_feature
    if s.ndim != t.ndim:
        fail("projected_student` and `teacher_feature", "features of the same rank",
             f"shapes {tuple(s.shape)} and {tuple(t.shape)}", "Pair layers of the same kind (conv with conv).")
    width_axis = -1 if s.ndim == 3 else 1
    if s.shape[width_axis] != t.shape[width_axis]:
        fail("projected_student", f"of the teacher's width {t.shape[width_axis]}",
             f"width {s.shape[width_axis]} (shape {tuple(s.shape)})",
             "Map the student feature through FeatureProjector(width_student, width_teacher) first.")
    if s.ndim == 4:
        s, t = pool_to_common(s, t)
    elif s.shape != t.shape:
        fail("projected_student` and `teacher_feature", "the same shape", f"{tuple(s.shape)} and {tuple(t.shape)}",
             "Token features must cover the same tokens.")
    per_example = (s - t).square().reshape(s.shape[0], -1).mean(1)  # (B,)
    return reduce(per_example, reduction, mask)


def _attention_map(feature: torch.Tensor, p: float) -> torch.Tensor:
    """Zagoruyko & Komodakis (2017) activation-based attention Q = sum_c |A_c|^p: (B, C, H, W) -> (B, 1, H, W)."""
    if p == 2:
        return feature.square().sum(1, keepdim=True)
    # clamp: d|a|^p/da is infinite at a = 0 for p < 1, and ReLU features are exactly 0 often
    return feature.abs().clamp_min(EPS).pow(p).sum(1, keepdim=True)


def attention_transfer_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor, p: float = 2.0,
                            reduction: str = "mean", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Activation-based attention transfer (Zagoruyko & Komodakis, ICLR 2017, eq. 2).

    Each conv map A (B, C, H, W) becomes a spatial attention map ``Q = sum_c |A_c|^p`` (B, H, W), flattened and
    L2-normalised per example, and the loss is the *squared* L2 distance
    ``|| Q_s / ||Q_s|| - Q_t / ||Q_t|| ||_2^2`` per example. The paper writes ``beta / 2`` times the unsquared
    distance; the authors' code (``at_loss``) uses the squared distance averaged over the H * W positions as well,
    which makes the scale shrink with resolution (hence their beta = 1000). We sum over positions instead: each
    example's value lies in [0, 2] at any resolution. Channel counts may differ (Q sums over channels); when the
    spatial sizes differ, the larger Q is adaptive-average-pooled to the smaller before normalising.

    Parameters
    ----------
    student_feature : (B, C_s, H_s, W_s) float
    teacher_feature : (B, C_t, H_t, W_t) float
        For token features (B, T, D) pass ``x.transpose(1, 2)[..., None]`` (tokens as a T x 1 map).
    p : float > 0, the exponent (2 in the paper)
    reduction, mask : as in :func:`kd_loss`

    Returns
    -------
    Scalar tensor (or (B,)), unitless, in [0, 2] per example; invariant to positive scaling of either feature.
    """
    check_features(student_feature, teacher_feature)
    for x, name in ((student_feature, "student_feature"), (teacher_feature, "teacher_feature")):
        if x.ndim != 4:
            fail(name, "a 4-D conv map (B, C, H, W)", f"shape {tuple(x.shape)}",
                 "For token features (B, T, D) pass x.transpose(1, 2)[..., None].")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0:
        fail("p", "a positive number", repr(p), "The paper uses p = 2.")
    q_s, q_t = pool_to_common(_attention_map(student_feature, p), _attention_map(teacher_feature, p))
    q_s, q_t = F.normalize(flatten(q_s), dim=1, eps=EPS), F.normalize(flatten(q_t), dim=1, eps=EPS)  # (B, HW)
    per_example = (q_s - q_t).square().sum(1)  # (B,)
    return reduce(per_example, reduction, mask)


def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (B, B) between the rows of e (B, D), with an exactly-zero diagonal (Park et al.'s code)."""
    square = e.square().sum(1)  # (B,)
    # clamp before sqrt: the Gram route can round to tiny negatives, and sqrt's gradient at 0 is infinite
    d = (square[:, None] + square[None, :] - 2.0 * e @ e.T).clamp_min(EPS).sqrt()
    return d * (1.0 - torch.eye(e.shape[0], dtype=e.dtype, device=e.device))


def rkd_distance_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Relational KD, distance-wise (Park et al., CVPR 2019, eqs. 4-5).

    ``psi_D(i, j) = ||e_i - e_j||_2 / mu`` with mu the mean distance over the B (B - 1) pairs i != j; the loss is the
    Huber (smooth L1, delta = 1) loss between student and teacher psi_D, averaged over those pairs (the authors'
    code averages over all B^2 entries, diagonal included, which is (B - 1) / B times this).

    Parameters
    ----------
    student_emb : (B, ...) float, flattened to (B, D_s)
    teacher_emb : (B, ...) float, flattened to (B, D_t); a constant (computed without gradient, as in the paper)

    Returns
    -------
    Scalar tensor >= 0, unitless; invariant to uniform scaling of either embedding. Needs B >= 2.
    """
    check_features(student_emb, teacher_emb, "student_emb", "teacher_emb")
    check_batch_size(student_emb, "student_emb", 2, "distances need pairs")
    off_diagonal = ~torch.eye(student_emb.shape[0], dtype=torch.bool, device=student_emb.device)

    def normalised(e: torch.Tensor) -> torch.Tensor:
        d = _pairwise_distances(flatten(e))  # (B, B)
        return d / d[off_diagonal].mean().clamp_min(EPS)

    with torch.no_grad():
        target = normalised(teacher_emb)
    return F.smooth_l1_loss(normalised(student_emb)[off_diagonal], target[off_diagonal])


def _angles(e: torch.Tensor) -> torch.Tensor:
    """cos of the angle at vertex j between e_i and e_k, for every (j, i, k): (B, B, B); zero where i or k is j."""
    unit = F.normalize(e[None, :, :] - e[:, None, :], dim=2, eps=EPS)  # (B, B, D): [j, i] = unit(e_i - e_j)
    return unit @ unit.transpose(1, 2)  # (B, B, B)


def rkd_angle_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Relational KD, angle-wise (Park et al., CVPR 2019, eqs. 6-7).

    ``psi_A(i, j, k) = cos angle(e_i - e_j, e_k - e_j)`` for every triplet; the loss is the Huber (smooth L1,
    delta = 1) loss between student and teacher psi_A, averaged over the B (B - 1) (B - 2) triplets of distinct
    examples (degenerate triplets are zero on both sides; the authors' code averages over all B^3 entries).
    Memory is O(B^2 D + B^3).

    Parameters
    ----------
    student_emb : (B, ...) float, flattened to (B, D_s)
    teacher_emb : (B, ...) float, flattened to (B, D_t); a constant (computed without gradient, as in the paper)

    Returns
    -------
    Scalar tensor >= 0, unitless; invariant to scaling, translation and rotation of either embedding. Needs B >= 3.
    """
    check_features(student_emb, teacher_emb, "student_emb", "teacher_emb")
    check_batch_size(student_emb, "student_emb", 3, "angles need triplets")
    b = student_emb.shape[0]
    with torch.no_grad():
        target = _angles(flatten(teacher_emb))
    total = F.smooth_l1_loss(_angles(flatten(student_emb)), target, reduction="sum")
    return total / (b * (b - 1) * (b - 2))


def similarity_preserving_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori, ICCV 2019, eqs. 2-4).

    With F the feature flattened to (B, D), ``G = row_normalise(F F^T)`` (each row divided by its L2 norm) and the
    loss is ``||G_s - G_t||_F^2 / B^2``. Widths may differ: only the B x B similarities are compared.

    Parameters
    ----------
    student_feature : (B, ...) float
    teacher_feature : (B, ...) float

    Returns
    -------
    Scalar tensor >= 0, unitless; zero when the student is the teacher times an orthogonal matrix (F F^T is kept)
    or a positive scalar.
    """
    check_features(student_feature, teacher_feature)
    b = student_feature.shape[0]
    f_s, f_t = flatten(student_feature), flatten(teacher_feature)
    g_s = F.normalize(f_s @ f_s.T, dim=1, eps=EPS)  # (B, B)
    g_t = F.normalize(f_t @ f_t.T, dim=1, eps=EPS)
    return (g_s - g_t).square().sum() / b**2


def _linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Differentiable linear CKA (Kornblith et al. 2019, eq. 5 in feature space) of x (B, D1) and y (B, D2)."""
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    # CKA is scale invariant, so dividing by a constant (detached) norm changes neither the value nor the
    # gradient, and keeps the fourth-power sums below from overflowing in float32
    x = x / x.detach().norm().clamp_min(EPS)
    y = y / y.detach().norm().clamp_min(EPS)
    b, d1, d2 = x.shape[0], x.shape[1], y.shape[1]
    if d1 * d2 <= b * (d1 + d2):  # ||X'Y||_F^2 in feature space ...
        xy, xx, yy = (x.T @ y).square().sum(), (x.T @ x).square().sum(), (y.T @ y).square().sum()
    else:  # ... or through the B x B Gram matrices: <XX', YY'>, whichever is cheaper
        k, l = x @ x.T, y @ y.T  # noqa: E741
        xy, xx, yy = (k * l).sum(), k.square().sum(), l.square().sum()
    # xx, yy >= 1 / B for any non-constant features after the normalisation above; the clamp guards constant ones
    return xy / (xx * yy).clamp_min(EPS).sqrt()


def cka_alignment_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """``1 - linear CKA`` between the two layers' features over the batch (Kornblith et al. 2019; as a distillation
    loss, e.g. Saha et al. 2022).

    Features are flattened to (B, D_s) and (B, D_t) and centred over the batch; CKA =
    ``||X'Y||_F^2 / (||X'X||_F ||Y'Y||_F)``. Agrees with :func:`kdlens.measures.linear_cka` (biased HSIC).

    Parameters
    ----------
    student_feature : (B, ...) float
    teacher_feature : (B, ...) float

    Returns
    -------
    Scalar tensor in [0, 1], unitless; zero when the student is an orthogonal transform, isotropic scaling and
    translation of the teacher. Constant features give 1 (and zero gradient). Needs B >= 2.
    """
    check_features(student_feature, teacher_feature)
    check_batch_size(student_feature, "student_feature", 2, "CKA compares examples")
    return 1.0 - _linear_cka(flatten(student_feature), flatten(teacher_feature))
