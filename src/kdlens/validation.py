"""The one message template for users' mistakes, and the checks every layer runs at its public boundary.

Every user error raises with one template: ``Expected `name` to be <what>, but got <what>. <fix>``.
Checks run once, in the public function; private helpers trust their inputs. A bottom-layer module (it imports
only numpy; torch where a tensor is checked), so measures, subjects, tasks, probes, configs and the report all use it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where a tensor is checked: the report validates its input without it
    import torch


def fail(name: str, expected: str, got: str, fix: str = "", error: type[Exception] = ValueError, *,
         verb: str = "be") -> None:
    """Raise ``error`` with the kdlens message template.

    ``verb`` is "be" but where English needs another one ("to have one value per bin (4)"); say what is expected
    after it (a phrase, no verb of its own).

    Examples
    --------
    >>> fail("n", "a positive integer", "-3", "Ask for at least one example.")
    Traceback (most recent call last):
    ValueError: Expected `n` to be a positive integer, but got -3. Ask for at least one example.
    """
    message = f"Expected `{name}` to {verb} {expected}, but got {got}."
    if fix:
        message += f" {fix}"
    raise error(message)


# Rows of a probability matrix may drift from 1 by float32 rounding of softmax; anything further is a bug upstream.
ROW_SUM_ATOL = 1e-3


def as_tensor(x, name: str) -> torch.Tensor:
    """Return ``x`` as a CPU-or-device tensor without copying when it already is one; numpy arrays are wrapped."""
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    fail(name, "a torch.Tensor or numpy.ndarray", type(x).__name__,
         "Convert it with torch.as_tensor(...) first.", error=TypeError)


def as_float(x, name: str) -> torch.Tensor:
    """Tensor of a floating dtype (integers and bools are rejected: they are labels, not scores)."""
    t = as_tensor(x, name)
    if not t.is_floating_point():
        fail(name, "a floating-point tensor", f"dtype {t.dtype}",
             "Pass scores, logits or features as float tensors.", error=TypeError)
    return t


def as_labels(x, name: str = "labels") -> torch.Tensor:
    """1-D integer class indices."""
    import torch

    t = as_tensor(x, name)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        fail(name, "an integer tensor of class indices", f"dtype {t.dtype}",
             "Pass class indices (e.g. labels.long()), not one-hot rows or scores.", error=TypeError)
    if t.ndim != 1:
        fail(name, "1-D of shape (n,)", f"shape {tuple(t.shape)}",
             "Pass one class index per example; for one-hot rows use labels.argmax(-1).")
    return t.long()


def check_ndim(t: torch.Tensor, name: str, ndim: int, shape_doc: str) -> None:
    if t.ndim != ndim:
        fail(name, f"{ndim}-D of shape {shape_doc}", f"shape {tuple(t.shape)}")


def check_finite(t: torch.Tensor, name: str) -> None:
    import torch

    if not bool(torch.isfinite(t).all()):
        bad = ~torch.isfinite(t)
        first = tuple(int(i) for i in bad.nonzero()[0])
        kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
        fail(name, "finite", f"{int(bad.sum())} non-finite values ({kind}; first at index {first})",
             "Check the model for overflow or divide-by-zero before measuring.")


def check_same_length(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        fail(f"{name_a}` and `{name_b}", "aligned (the same number of examples n along dim 0)",
             f"{a.shape[0]} and {b.shape[0]}",
             "Both must be computed on the same examples in the same order.")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        fail(f"{name_a}` and `{name_b}", "the same shape", f"{tuple(a.shape)} and {tuple(b.shape)}",
             "Teacher and student must score the same examples over the same classes.")


def check_logits(x, name: str) -> torch.Tensor:
    """(n, C) finite float logits with C >= 2."""
    t = as_float(x, name)
    check_ndim(t, name, 2, "(n, n_classes)")
    if t.shape[1] < 2:
        fail(name, "scores over at least 2 classes", f"shape {tuple(t.shape)}",
             "For a binary model with one output, pass torch.stack([-z, z], -1) / 2 or its softmax.")
    if t.shape[0] < 1:
        fail(name, "non-empty", "0 examples")
    check_finite(t, name)
    return t


def check_probs(x, name: str = "probs") -> torch.Tensor:
    """(n, C) probabilities: every entry in [0, 1], every row summing to 1 (within 1e-3, or the rounding of a
    half-precision dtype: two of its eps)."""
    import torch

    t = as_float(x, name)
    if t.ndim == 1:
        fail(name, "2-D of shape (n, n_classes)", f"shape {tuple(t.shape)}",
             "For binary scores p of the positive class pass torch.stack([1 - p, p], -1).")
    check_ndim(t, name, 2, "(n, n_classes)")
    if t.shape[0] < 1:
        fail(name, "non-empty", "0 examples")
    if t.shape[1] < 2:
        fail(name, "probabilities over at least 2 classes", f"shape {tuple(t.shape)}",
             "For binary scores p of the positive class pass torch.stack([1 - p, p], -1).")
    # One fused pass on the happy path: rows sum to 1 and no entry is negative implies all entries in [0, 1]
    # and finite. The slower diagnostics below run only when something is wrong.
    lowest = t.min()
    row_sums = t.sum(dim=1) if t.dtype in (torch.float32, torch.float64) else t.float().sum(dim=1)  # (n,)
    # half-precision softmax rows drift by the dtype's rounding (bfloat16: ~0.3%); renormalising cannot undo it
    tolerance = max(ROW_SUM_ATOL, 2 * torch.finfo(t.dtype).eps)
    sums_ok = bool(((row_sums - 1.0).abs() <= tolerance).all())
    if sums_ok and bool(lowest >= 0):
        return t
    check_finite(t, name)
    if bool(lowest < 0) or bool(t.max() > 1):
        fail(name, "probabilities in [0, 1]", f"values in [{float(lowest):.4g}, {float(t.max()):.4g}]",
             "These look like logits: pass logits.softmax(-1).")
    worst = int((row_sums - 1.0).abs().argmax())
    fail(name, "rows that sum to 1", f"row {worst} summing to {float(row_sums[worst]):.6g}",
         "Normalise with probs / probs.sum(-1, keepdim=True) or pass logits.softmax(-1).")


def check_labels(labels, n: int, n_classes: int, name: str = "labels") -> torch.Tensor:
    """Integer labels, one per example, each in [0, n_classes)."""
    import torch

    t = as_labels(labels, name)
    if t.shape[0] != n:
        fail(name, f"one label per example ({n})", f"{t.shape[0]} labels",
             "Labels and scores must cover the same examples in the same order.")
    lo, hi = torch.aminmax(t)
    if int(lo) < 0 or int(hi) >= n_classes:
        fail(name, f"class indices in [0, {n_classes - 1}]", f"values in [{int(lo)}, {int(hi)}]",
             "The scores have one column per class; a label must index one of them.")
    return t


def check_int(value, name: str, minimum: int | None = None, fix: str = "") -> int:
    """``value`` as an int: a Python or numpy integer (a bool is not one), at least ``minimum`` when one is given.

    With a minimum, any other value is one mistake and a ValueError: "a positive integer" (minimum 1), "a
    non-negative integer" (0) or "an integer >= m". Without one, a value that is not an integer is a TypeError.

    Examples
    --------
    >>> check_int(3, "n", minimum=1)
    3
    >>> check_int(0, "batch_size", minimum=1, fix="16 suits small models on a CPU.")
    Traceback (most recent call last):
    ValueError: Expected `batch_size` to be a positive integer, but got 0. 16 suits small models on a CPU.
    """
    if minimum is None:
        expected, error = "an integer", TypeError
    else:
        expected = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        error = ValueError
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
            or (minimum is not None and value < minimum)):
        fail(name, expected, repr(value), fix, error=error)
    return int(value)


def check_bool(value, name: str) -> bool:
    """``value`` as a bool: True or False (a numpy bool too); anything else, 0 and 1 included, is a TypeError.

    >>> check_bool(1, "do_sample")
    Traceback (most recent call last):
    TypeError: Expected `do_sample` to be True or False, but got 1.
    """
    if not isinstance(value, (bool, np.bool_)):
        fail(name, "True or False", repr(value), error=TypeError)
    return bool(value)


def check_n_bins(n_bins, name: str = "n_bins") -> int:
    return check_int(n_bins, name, 1, "15 is the common choice for ECE.")


def check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        fail(name, "one of " + ", ".join(repr(c) for c in choices), repr(value))
    return value


def check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        fail(name, "a positive number", repr(value), error=TypeError)
    if not np.isfinite(value) or value <= 0:
        fail(name, "a positive finite number", repr(value))
    return float(value)


def check_min_samples(n: int, minimum: int, name: str, estimator: str) -> None:
    if n < minimum:
        fail(name, f"at least {minimum} examples for {estimator}", f"{n}",
             "Gather more examples (or a larger batch) before measuring.")


def check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        fail("level", "a confidence level strictly between 0 and 1", repr(level), "0.95 is the usual choice.")
    return float(level)


def check_resamples(n_resamples, name: str = "n_resamples") -> int:
    return check_int(n_resamples, name, 1, "1000 resamples give stable 95% intervals.")
