"""Reasoning traces against answers: is a right answer reached through a right trace, and does the student's
trace follow the teacher's step by step?

A trace probe marks, for each of n questions, whether the model's reasoning trace is correct and whether its
final answer is. :func:`trace_answer_table` counts the four combinations; :func:`independence_test` asks whether
answer correctness depends on trace correctness at all (a model that answers right after a wrong trace as often as
after a right one is not using its trace). :func:`step_agreement` compares teacher and student on the gold steps of
the same questions. Text similarity of whole traces is in :mod:`kdlens.measures.text_overlap`.

The tests here are computed in plain Python (``math.erfc`` for the chi-square tail, log-gamma for the
hypergeometric probabilities); scipy is used only as an oracle in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from kdlens import validation as C

REDUCTIONS = ("mean", "none")
STEP_KINDS = ("auto", "correctness", "values")
_FISHER_RELATIVE_TOLERANCE = 1e-7  # tables this close in probability to the observed one count as "as extreme"


class TraceAnswerTable(NamedTuple):
    """2x2 counts of trace correctness (rows) by answer correctness (columns) over n examples.

    ``counts[0]`` is (correct trace, correct answer), (correct trace, incorrect answer); ``counts[1]`` the same for
    incorrect traces. The conditional answer accuracies are None, never NaN, when no trace falls in their row.
    """

    counts: tuple[tuple[int, int], tuple[int, int]]
    n: int
    p_answer_given_correct_trace: float | None  # P(correct answer | correct trace)
    p_answer_given_incorrect_trace: float | None  # P(correct answer | incorrect trace)

    def as_dict(self) -> dict:
        """Plain JSON-ready dict: counts as nested lists, the probabilities as floats or None."""
        return {
            "counts": [list(row) for row in self.counts],
            "n": self.n,
            "p_answer_given_correct_trace": self.p_answer_given_correct_trace,
            "p_answer_given_incorrect_trace": self.p_answer_given_incorrect_trace,
        }


class IndependenceTest(NamedTuple):
    """Chi-square and Fisher exact tests of independence on a 2x2 table."""

    statistic: float  # Pearson chi-square (Yates-corrected when ``correction``); 0.0 for a degenerate table
    p_value: float  # chi-square survival function at ``statistic`` with 1 degree of freedom
    dof: int  # always 1
    expected: tuple[tuple[float, float], tuple[float, float]]  # row total * column total / n, per cell
    correction: bool  # whether Yates' continuity correction was applied
    fisher_p_value: float  # two-sided Fisher exact test; read this one when ``small_expected``
    small_expected: bool  # some expected count < 5: the chi-square approximation is poor
    degenerate: bool  # a row or a column sums to 0: nothing to test, both p-values are 1.0

    def as_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return {
            "statistic": self.statistic, "p_value": self.p_value, "dof": self.dof,
            "expected": [list(row) for row in self.expected], "correction": self.correction,
            "fisher_p_value": self.fisher_p_value, "small_expected": self.small_expected,
            "degenerate": self.degenerate,
        }


# -- validation ---------------------------------------------------------------------------------------------------


def _as_array(x, name: str, what: str) -> np.ndarray:
    """numpy view of a tensor, array, list or tuple; anything else is a TypeError."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        try:
            array = np.asarray(x)
        except ValueError:  # ragged nesting
            array = np.asarray(x, dtype=object)
        return array
    C.fail(name, what, type(x).__name__, error=TypeError)


def _check_flags(x, name: str) -> np.ndarray:
    """(n,) bool, n >= 1, from bools or 0/1 integers (a tensor, an array, a list)."""
    what = "a 1-D bool tensor, array or list"
    a = _as_array(x, name, what)
    if a.ndim != 1:
        C.fail(name, "1-D of shape (n,)", f"shape {a.shape}", "Pass one flag per example.")
    if a.shape[0] < 1:
        C.fail(name, "non-empty", "0 examples")
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind in "iu":
        if not bool(((a == 0) | (a == 1)).all()):
            C.fail(name, "bools (or 0/1 integers)", f"integers in [{a.min()}, {a.max()}]",
                   "Pass whether each example is correct, e.g. predictions == targets.")
        return a.astype(bool)
    if a.dtype.kind == "f":
        C.fail(name, "bools (or 0/1 integers)", f"dtype {a.dtype}",
               f"Threshold scores first, e.g. {name} > 0.5, or pass predictions == targets.", error=TypeError)
    C.fail(name, "bools (or 0/1 integers)", f"values of dtype {a.dtype}",
           "Pass whether each example is correct as True / False.", error=TypeError)


def _check_counts(x, name: str = "table_or_counts") -> tuple[int, int, int, int]:
    """A TraceAnswerTable or 2x2 nonnegative integer counts with a positive total -> (a, b, c, d)."""
    if isinstance(x, TraceAnswerTable):
        x = x.counts
    a = _as_array(x, name, "a TraceAnswerTable or 2x2 integer counts (tensor, array or nested list)")
    if a.shape != (2, 2):
        C.fail(name, "2x2 counts [[a, b], [c, d]]", f"shape {a.shape}",
               "Pass trace_answer_table(...) or its .counts.")
    if a.dtype.kind not in "iu":
        C.fail(name, "integer counts", f"dtype {a.dtype}",
               "Counts are whole numbers of examples; pass them as integers.", error=TypeError)
    if bool((a < 0).any()):
        C.fail(name, "nonnegative counts", f"minimum {int(a.min())}")
    if int(a.sum()) == 0:
        C.fail(name, "a table with at least one example", "all zero counts")
    return int(a[0, 0]), int(a[0, 1]), int(a[1, 0]), int(a[1, 1])


# -- the table ----------------------------------------------------------------------------------------------------


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def trace_answer_table(trace_correct, answer_correct) -> TraceAnswerTable:
    """Count trace correctness against answer correctness over n examples.

    Parameters
    ----------
    trace_correct, answer_correct : (n,) bool tensor, array or list, n >= 1
        Whether each example's reasoning trace, and its final answer, is correct (0/1 integers are accepted).

    Returns
    -------
    TraceAnswerTable
        ``counts`` (2x2 ints; rows: trace correct, trace incorrect; columns: answer correct, answer incorrect),
        ``n``, ``p_answer_given_correct_trace`` = P(CA | CT) and ``p_answer_given_incorrect_trace`` = P(CA | IT),
        each in [0, 1] or None when its row is empty. ``as_dict()`` gives a JSON-ready dict.

    Examples
    --------
    >>> table = trace_answer_table([True, True, True, False], [True, True, False, True])
    >>> table.counts
    ((2, 1), (1, 0))
    >>> round(table.p_answer_given_correct_trace, 4), table.p_answer_given_incorrect_trace
    (0.6667, 1.0)
    """
    trace = _check_flags(trace_correct, "trace_correct")
    answer = _check_flags(answer_correct, "answer_correct")
    if trace.shape[0] != answer.shape[0]:
        C.fail("trace_correct` and `answer_correct", "aligned (one flag per example in each)",
               f"{trace.shape[0]} and {answer.shape[0]}", "Both must describe the same examples in the same order.")
    ct_ca = int((trace & answer).sum())
    ct_ia = int((trace & ~answer).sum())
    it_ca = int((~trace & answer).sum())
    it_ia = int((~trace & ~answer).sum())
    return TraceAnswerTable(
        counts=((ct_ca, ct_ia), (it_ca, it_ia)),
        n=int(trace.shape[0]),
        p_answer_given_correct_trace=_ratio(ct_ca, ct_ca + ct_ia),
        p_answer_given_incorrect_trace=_ratio(it_ca, it_ca + it_ia),
    )


# -- the tests ----------------------------------------------------------------------------------------------------


def _chi2_sf_dof1(statistic: float) -> float:
    """P(X >= statistic) for X ~ chi-square(1): X = Z^2, so P(|Z| >= sqrt(s)) = erfc(sqrt(s / 2))."""
    return math.erfc(math.sqrt(statistic / 2.0))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _fisher_two_sided(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher exact p-value, as scipy.stats.fisher_exact defines it.

    With the margins fixed, the top-left cell x is hypergeometric: P(x) = C(r1, x) C(r2, c1 - x) / C(n, c1). The
    p-value sums P(x) over every x no more probable than the observed a (up to a relative 1e-7, so tables of equal
    probability are not split by rounding; R's fisher.test uses the same tolerance).
    """
    r1, r2, c1 = a + b, c + d, a + c
    n = r1 + r2
    if 0 in (r1, r2, c1, n - c1):
        return 1.0
    log_denominator = _log_comb(n, c1)
    log_pmf = [_log_comb(r1, x) + _log_comb(r2, c1 - x) - log_denominator
               for x in range(max(0, c1 - r2), min(r1, c1) + 1)]
    threshold = log_pmf[a - max(0, c1 - r2)] + math.log1p(_FISHER_RELATIVE_TOLERANCE)
    return min(1.0, math.fsum(math.exp(lp) for lp in log_pmf if lp <= threshold))


def independence_test(table_or_counts, correction: bool = True) -> IndependenceTest:
    """Test whether answer correctness is independent of trace correctness on a 2x2 table.

    Pearson's chi-square test: expected counts ``E_ij = r_i c_j / n`` from the margins, statistic
    ``sum_ij (O_ij - E_ij)^2 / E_ij`` and p-value ``P(chi2_1 >= statistic) = erfc(sqrt(statistic / 2))``. With
    ``correction=True`` Yates' continuity correction moves each observed count towards its expected count by
    ``min(0.5, |O - E|)`` first, as ``scipy.stats.chi2_contingency`` does.

    Fisher's exact test is reported beside it (two-sided: the probability, under the hypergeometric distribution
    of tables with these margins, of a table no more probable than the observed one, as
    ``scipy.stats.fisher_exact`` defines it). Lab tables are often small: when ``small_expected`` is True (an
    expected count below 5) the chi-square approximation is poor and ``fisher_p_value`` is the one to read.

    A degenerate table, with a row or a column summing to 0 (every trace correct, say), carries no evidence
    either way: it returns statistic 0.0, both p-values 1.0 and ``degenerate=True`` rather than raising (scipy's
    chi2_contingency raises there).

    Parameters
    ----------
    table_or_counts : TraceAnswerTable or 2x2 nonnegative integer counts (tensor, array or nested list)
        ``[[a, b], [c, d]]`` with a positive total; rows and columns as in :func:`trace_answer_table` (the test is
        symmetric in them).
    correction : bool
        Apply Yates' continuity correction to the chi-square statistic (scipy's default).

    Returns
    -------
    IndependenceTest
        ``statistic``, ``p_value``, ``dof`` (1), ``expected`` (2x2 floats), ``correction``, ``fisher_p_value``,
        ``small_expected``, ``degenerate``; ``as_dict()`` gives a JSON-ready dict. p-values are in [0, 1].

    Examples
    --------
    >>> result = independence_test([[30, 10], [10, 30]], correction=False)
    >>> result.statistic, round(result.p_value, 6), result.small_expected
    (20.0, 8e-06, False)
    >>> round(independence_test([[3, 0], [0, 3]]).fisher_p_value, 4)
    0.1
    """
    correction = C.check_bool(correction, "correction")
    a, b, c, d = _check_counts(table_or_counts)
    observed = ((a, b), (c, d))
    rows, cols, n = (a + b, c + d), (a + c, b + d), a + b + c + d
    expected = tuple(tuple(rows[i] * cols[j] / n for j in range(2)) for i in range(2))
    small = any(e < 5.0 for row in expected for e in row)
    if 0 in rows or 0 in cols:
        return IndependenceTest(0.0, 1.0, 1, expected, bool(correction), 1.0, small, True)
    statistic = 0.0
    for i in range(2):
        for j in range(2):
            o, e = float(observed[i][j]), expected[i][j]
            if correction:  # Yates: towards E by half a count, never past it
                o += math.copysign(min(0.5, abs(e - o)), e - o)
            statistic += (o - e) ** 2 / e
    return IndependenceTest(statistic, _chi2_sf_dof1(statistic), 1, expected, bool(correction),
                            _fisher_two_sided(a, b, c, d), small, False)


# -- step agreement -----------------------------------------------------------------------------------------------


def _check_step_lists(x, name: str) -> list[list]:
    """Outer sequence of n >= 1 examples, each a sequence of per-step entries, as plain lists."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        if x.ndim != 2:
            C.fail(name, "2-D of shape (n, n_steps) when given as a tensor or array", f"shape {tuple(x.shape)}",
                   "For questions with different numbers of steps pass a list of lists.")
        x = x.tolist()
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
        C.fail(name, "a list with one list of per-step entries per example", type(x).__name__, error=TypeError)
    if len(x) < 1:
        C.fail(name, "non-empty", "0 examples")
    steps = []
    for i, example in enumerate(x):
        if isinstance(example, (torch.Tensor, np.ndarray)):
            example = example.tolist()
        if isinstance(example, (str, bytes)) or not isinstance(example, Sequence):
            C.fail(f"{name}[{i}]", "a list of per-step entries", type(example).__name__,
                   "Give one list per example, one entry per gold step.", error=TypeError)
        steps.append(list(example))
    return steps


def _is_bool(v) -> bool:
    return isinstance(v, (bool, np.bool_))


def step_agreement(teacher_steps, student_steps, kind: str = "auto", reduction: str = "mean"):
    """Share of gold steps on which teacher and student agree, per question.

    Each question i has k_i >= 1 gold steps; ``teacher_steps[i]`` and ``student_steps[i]`` hold one entry per gold
    step, aligned to them (a step a model did not state is None). The score of question i is
    ``(1 / k_i) * sum_j agree(t_ij, s_ij)``, where

    * ``kind="correctness"`` (entries are bools: was the model's step j right?): agree iff both are True. Two
      wrong steps do not count: without the stated values nothing says the two were wrong in the same way.
      None counts as not right.
    * ``kind="values"`` (entries are the values each model stated at step j): agree iff neither is None and
      ``t_ij == s_ij``, right or wrong; a shared wrong value is agreement, which is how a copied mistake shows.
      Normalise the values first (e.g. strip, lowercase, or parse numbers): "12" != 12 and NaN != NaN.
    * ``kind="auto"`` reads correctness when every non-None entry on both sides is a bool, values otherwise.

    Parameters
    ----------
    teacher_steps, student_steps : list of n >= 1 lists (or a (n, k) tensor / array)
        Per-question, per-gold-step entries of the two models on the same questions in the same order;
        ``len(teacher_steps[i]) == len(student_steps[i]) >= 1``.
    kind : "auto" | "correctness" | "values"
    reduction : "mean" | "none"
        "mean" returns the mean over questions (each question weighs the same, whatever its k_i) as a float in
        [0, 1]; "none" a (n,) float64 tensor, ready for :func:`bootstrap_mean_interval`.

    Examples
    --------
    >>> step_agreement([[True, True, False]], [[True, False, False]])
    0.3333333333333333
    >>> step_agreement([[3, 7, 12], [5]], [[3, 8, 12], [None]], reduction="none")
    tensor([0.6667, 0.0000], dtype=torch.float64)
    """
    C.check_choice(kind, "kind", STEP_KINDS)
    C.check_choice(reduction, "reduction", REDUCTIONS)
    teacher = _check_step_lists(teacher_steps, "teacher_steps")
    student = _check_step_lists(student_steps, "student_steps")
    if len(teacher) != len(student):
        C.fail("teacher_steps` and `student_steps", "aligned (one list per question in each)",
               f"{len(teacher)} and {len(student)}", "Both must cover the same questions in the same order.")
    for i, (t, s) in enumerate(zip(teacher, student, strict=True)):
        if len(t) != len(s):
            C.fail(f"teacher_steps[{i}]` and `student_steps[{i}]", "one entry per gold step in each",
                   f"{len(t)} and {len(s)} entries", "Align each model's steps to the gold steps; use None for a "
                   "step a model did not state.")
        if len(t) == 0:
            C.fail(f"teacher_steps[{i}]", "at least one gold step", "0 steps",
                   "Drop questions without gold steps before measuring.")
    entries = [v for example in (*teacher, *student) for v in example if v is not None]
    if kind == "auto":
        kind = "correctness" if all(_is_bool(v) for v in entries) else "values"
    elif kind == "correctness" and not all(_is_bool(v) for v in entries):
        bad = next(v for v in entries if not _is_bool(v))
        C.fail("teacher_steps` and `student_steps", 'bools (or None) with kind="correctness"', repr(bad),
               'Pass per-step correctness as True / False, or use kind="values".', error=TypeError)
    if kind == "correctness":
        def agree(t, s) -> bool:
            return t is not None and s is not None and bool(t) and bool(s)
    else:
        def agree(t, s) -> bool:
            return t is not None and s is not None and bool(t == s)
    shares = [sum(agree(t, s) for t, s in zip(ts, ss, strict=True)) / len(ts)
              for ts, ss in zip(teacher, student, strict=True)]
    scores = torch.tensor(shares, dtype=torch.float64)  # (n,)
    return float(scores.mean()) if reduction == "mean" else scores
