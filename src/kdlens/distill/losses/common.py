"""Validation and reduction shared by every loss: cheap checks (they run every training step), one message
template, and masked reductions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdlens.validation import fail

REDUCTIONS = ("mean", "sum", "none")
CALIBRATION_KINDS = ("mdca", "dca")
PROJECTOR_KINDS = ("conv", "linear")
EPS = 1e-12


def check_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        fail(name, "a torch.Tensor", type(x).__name__, "Convert it with torch.as_tensor(...) first.", error=TypeError)
    if not x.is_floating_point():
        fail(name, "a floating-point tensor", f"dtype {x.dtype}", "Pass logits or features as float tensors.",
             error=TypeError)


def check_logits(student_logits, teacher_logits) -> None:
    """(B, C) float student and teacher logits over the same examples and classes, all finite."""
    for x, name in ((student_logits, "student_logits"), (teacher_logits, "teacher_logits")):
        check_tensor(x, name)
        if x.ndim != 2:
            fail(name, "2-D of shape (B, n_classes)", f"shape {tuple(x.shape)}",
                 "For sequence logits (B, T, C) pass logits.flatten(0, 1) and a mask of real tokens.")
    if student_logits.shape[0] != teacher_logits.shape[0]:
        fail("student_logits` and `teacher_logits", "the same batch size",
             f"{student_logits.shape[0]} and {teacher_logits.shape[0]}",
             "Run teacher and student on the same batch, in the same order.")
    if student_logits.shape[1] != teacher_logits.shape[1]:
        fail("student_logits` and `teacher_logits", "scores over the same classes",
             f"{student_logits.shape[1]} and {teacher_logits.shape[1]} classes",
             "Teacher and student must share one label space; map or slice the teacher's classes first.")
    if not bool(torch.isfinite(student_logits).all() & torch.isfinite(teacher_logits).all()):
        name = "student_logits" if not bool(torch.isfinite(student_logits).all()) else "teacher_logits"
        fail(name, "finite", "NaN or inf values", "Check the model for overflow, or lower the learning rate.")


def check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        fail("temperature", "a positive number", repr(temperature), error=TypeError)
    if not math.isfinite(temperature) or temperature <= 0:
        fail("temperature", "a positive finite number", repr(temperature),
             "1.0 leaves the logits as they are; Hinton et al. use 2 to 20 to soften them.")
    return float(temperature)


def check_choice(value, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(name, "one of " + ", ".join(repr(c) for c in choices), repr(value))


def check_features(student, teacher, name_s: str = "student_feature", name_t: str = "teacher_feature") -> None:
    for x, name in ((student, name_s), (teacher, name_t)):
        check_tensor(x, name)
        if x.ndim < 2:
            fail(name, "at least 2-D of shape (B, ...)", f"shape {tuple(x.shape)}")
    if student.shape[0] != teacher.shape[0]:
        fail(f"{name_s}` and `{name_t}", "the same batch size", f"{student.shape[0]} and {teacher.shape[0]}",
             "Capture both layers on the same batch, in the same order.")


def reduce(per_example: torch.Tensor, reduction: str, mask) -> torch.Tensor:
    """Reduce (B,) per-example losses, counting only the examples ``mask`` selects (or weighting by it)."""
    check_choice(reduction, "reduction", REDUCTIONS)
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != per_example.shape:
            got = f"shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            fail("mask", f"a tensor of shape ({per_example.shape[0]},), one bool or weight per example", got)
        weight = mask.to(per_example.dtype)
        # where, not a product: a masked-out example whose loss is inf or NaN must not poison the batch
        per_example = torch.where(weight != 0, per_example * weight, per_example.new_zeros(()))
        if reduction == "mean":
            return per_example.sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)
    if reduction == "none":
        return per_example
    return per_example.sum() if reduction == "sum" else per_example.mean()


def flatten(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)  # (B, D)


def pool_to_common(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool (B, C, H, W) maps to their common (smaller) spatial size; a no-op when sizes match."""
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    return F.adaptive_avg_pool2d(a, size), F.adaptive_avg_pool2d(b, size)


def check_batch_size(x: torch.Tensor, name: str, minimum: int, why: str) -> None:
    """Batch-level losses compare examples with each other: they need ``minimum`` of them."""
    if x.shape[0] < minimum:
        fail(name, f"a batch of at least {minimum} examples ({why})", f"{x.shape[0]}",
             "Use a larger batch, or drop the last incomplete batch (TrainConfig.drop_last).")
