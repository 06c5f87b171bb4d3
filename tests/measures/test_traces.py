"""Trace-answer tables, independence tests (scipy as the oracle) and step agreement (plain-numpy reference)."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kdlens import measures as M

# -- the table ----------------------------------------------------------------------------------------------------


def test_table_by_hand():
    trace = [True, True, True, False, False, True]
    answer = [True, False, True, True, False, True]
    table = M.trace_answer_table(trace, answer)
    assert table.counts == ((3, 1), (1, 1))
    assert table.n == 6
    assert table.p_answer_given_correct_trace == 0.75
    assert table.p_answer_given_incorrect_trace == 0.5


def test_empty_row_gives_none_not_nan():
    table = M.trace_answer_table([True, True], [True, False])
    assert table.counts == ((1, 1), (0, 0))
    assert table.p_answer_given_incorrect_trace is None
    assert json.loads(json.dumps(table.as_dict())) == {
        "counts": [[1, 1], [0, 0]], "n": 2, "p_answer_given_correct_trace": 0.5,
        "p_answer_given_incorrect_trace": None,
    }
    assert M.trace_answer_table([False], [True]).p_answer_given_correct_trace is None


@pytest.mark.parametrize("convert", [list, np.array, torch.tensor, lambda x: torch.tensor(x).long(),
                                     lambda x: np.array(x, dtype=np.uint8)],
                         ids=["list", "numpy", "torch", "torch-0/1", "numpy-0/1"])
def test_table_input_kinds(convert):
    trace, answer = [True, False, False, True], [True, True, False, False]
    assert M.trace_answer_table(convert(trace), convert(answer)).counts == ((1, 1), (1, 1))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_table_matches_a_numpy_crosstab(pairs):
    trace, answer = (np.array(column) for column in zip(*pairs, strict=True))
    table = M.trace_answer_table(trace, answer)
    reference = np.zeros((2, 2), dtype=int)
    np.add.at(reference, (1 - trace.astype(int), 1 - answer.astype(int)), 1)  # row/column 0 = correct
    assert np.array_equal(np.array(table.counts), reference)
    assert table.n == len(pairs) == reference.sum()
    for row, p in ((0, table.p_answer_given_correct_trace), (1, table.p_answer_given_incorrect_trace)):
        assert p is None if reference[row].sum() == 0 else p == reference[row, 0] / reference[row].sum()


# -- independence tests: by hand ----------------------------------------------------------------------------------


def test_chi_square_by_hand():
    # Expected counts are all 20 and |O - E| = 10: uncorrected 4 * 10^2 / 20, Yates 4 * 9.5^2 / 20.
    plain = M.independence_test([[30, 10], [10, 30]], correction=False)
    yates = M.independence_test([[30, 10], [10, 30]])
    assert plain.statistic == pytest.approx(20.0) and yates.statistic == pytest.approx(18.05)
    assert plain.p_value == pytest.approx(math.erfc(math.sqrt(10.0)))
    assert plain.expected == ((20.0, 20.0), (20.0, 20.0)) and plain.dof == 1
    assert not plain.small_expected and not plain.degenerate
    assert yates.correction and not plain.correction


def test_fisher_lady_tasting_tea():
    # Fisher's own example: margins 4/4, 3 right in each row; tables at least as extreme are a = 0, 1, 3, 4:
    # (1 + 16 + 16 + 1) / C(8, 4) = 34 / 70.
    result = M.independence_test([[3, 1], [1, 3]])
    assert result.fisher_p_value == pytest.approx(34 / 70, rel=1e-12)
    assert result.small_expected  # expected counts are 2
    assert M.independence_test([[4, 0], [0, 4]]).fisher_p_value == pytest.approx(2 / 70, rel=1e-12)


def test_yates_never_overshoots():
    # E = [[0.8, 1.2], [1.2, 1.8]], so |O - E| = 0.2 < 0.5: the correction moves O onto E, not past it.
    result = M.independence_test([[1, 1], [1, 2]])
    assert result.statistic == 0.0 and result.p_value == 1.0


@pytest.mark.parametrize("counts", [[[5, 3], [0, 0]], [[0, 0], [0, 7]], [[4, 0], [6, 0]], [[0, 2], [0, 9]]])
def test_degenerate_tables(counts):
    for correction in (True, False):
        result = M.independence_test(counts, correction=correction)
        assert result.degenerate and result.small_expected
        assert (result.statistic, result.p_value, result.fisher_p_value, result.dof) == (0.0, 1.0, 1.0, 1)
        assert all(math.isfinite(e) for row in result.expected for e in row)
        json.dumps(result.as_dict())


def test_accepts_a_table_and_tensors():
    table = M.trace_answer_table([True, True, False, False, True], [True, False, False, False, True])
    expected = M.independence_test([[2, 1], [0, 2]])
    assert M.independence_test(table) == expected
    assert M.independence_test(torch.tensor([[2, 1], [0, 2]])) == expected
    assert M.independence_test(np.array([[2, 1], [0, 2]], dtype=np.int32)) == expected
    assert json.loads(json.dumps(expected.as_dict()))["expected"] == [[1.2, 1.8], [0.8, 1.2]]


# -- independence tests: scipy as the oracle ----------------------------------------------------------------------


def every_small_table(high=5):
    return [[[a, b], [c, d]] for a, b, c, d in itertools.product(range(high), repeat=4) if a + b + c + d]


def test_chi_square_matches_scipy_on_every_small_table():
    stats = pytest.importorskip("scipy.stats")
    for counts in every_small_table():
        ours = M.independence_test(counts)
        if ours.degenerate:  # scipy raises: an expected frequency is zero
            with pytest.raises(ValueError):
                stats.chi2_contingency(counts)
            continue
        for correction in (True, False):
            ours = M.independence_test(counts, correction=correction)
            statistic, p_value, dof, expected = stats.chi2_contingency(counts, correction=correction)
            assert ours.statistic == pytest.approx(statistic, rel=1e-12, abs=1e-12)
            assert ours.p_value == pytest.approx(p_value, rel=1e-12, abs=1e-14)
            assert ours.dof == dof == 1
            assert np.allclose(ours.expected, expected, rtol=1e-14)
            assert ours.small_expected == bool((expected < 5).any())


def test_fisher_matches_scipy_on_every_small_table():
    stats = pytest.importorskip("scipy.stats")
    for counts in every_small_table():
        assert M.independence_test(counts).fisher_p_value == pytest.approx(
            stats.fisher_exact(counts).pvalue, rel=1e-10, abs=1e-14), counts


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 400), min_size=4, max_size=4))
def test_both_tests_match_scipy_on_larger_tables(cells):
    stats = pytest.importorskip("scipy.stats")
    assume(sum(cells) > 0)
    counts = [cells[:2], cells[2:]]
    ours = M.independence_test(counts)
    assert ours.fisher_p_value == pytest.approx(stats.fisher_exact(counts).pvalue, rel=1e-9, abs=1e-300)
    if not ours.degenerate:
        statistic, p_value, _, _ = stats.chi2_contingency(counts)
        assert ours.statistic == pytest.approx(statistic, rel=1e-12, abs=1e-12)
        assert ours.p_value == pytest.approx(p_value, rel=1e-9, abs=1e-300)


def test_chi2_tail_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    from kdlens.measures.traces import _chi2_sf_dof1

    for x in [0.0, 1e-8, 0.1, 1.0, 3.841458820694124, 10.0, 50.0, 300.0]:
        assert _chi2_sf_dof1(x) == pytest.approx(stats.chi2.sf(x, 1), rel=1e-12, abs=1e-300)


def test_fisher_on_a_large_table_is_quick_and_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    counts = [[4_020, 5_980], [3_900, 6_100]]
    assert M.independence_test(counts).fisher_p_value == pytest.approx(stats.fisher_exact(counts).pvalue, rel=1e-8)


# -- step agreement -----------------------------------------------------------------------------------------------


def test_step_agreement_correctness_by_hand():
    teacher = [[True, True, False, False], [True]]
    student = [[True, False, False, True], [None]]
    # Only steps right on both sides count (both wrong is not agreement): 1/4 and 0/1.
    assert M.step_agreement(teacher, student, reduction="none").tolist() == [0.25, 0.0]
    assert M.step_agreement(teacher, student) == pytest.approx(0.125)


def test_step_agreement_values_by_hand():
    teacher = [[3, 7, 12], ["x=4", "y=2"]]
    student = [[3, 8, 12], ["x=4", None]]
    assert M.step_agreement(teacher, student, reduction="none").tolist() == pytest.approx([2 / 3, 1 / 2])
    # A shared wrong value is agreement; a step neither model stated is not.
    assert M.step_agreement([[5, None]], [[5, None]]) == 0.5


def test_step_agreement_kind_decides_how_bools_read():
    teacher, student = [[True, False]], [[True, False]]
    assert M.step_agreement(teacher, student) == 0.5  # auto -> correctness: both wrong does not count
    assert M.step_agreement(teacher, student, kind="values") == 1.0  # the same stated value twice
    assert M.step_agreement([[True, 2]], [[True, 2]]) == 1.0  # mixed entries -> values


def test_step_agreement_accepts_tensors():
    teacher = torch.tensor([[True, True], [False, True]])
    student = np.array([[True, False], [True, True]])
    scores = M.step_agreement(teacher, student, reduction="none")
    assert scores.dtype == torch.float64 and scores.shape == (2,)
    assert scores.tolist() == [0.5, 0.5]
    assert M.bootstrap_mean_interval(scores, n_resamples=10).estimate == 0.5


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_step_agreement_matches_numpy(n, k, seed):
    rng = np.random.default_rng(seed)
    t, s = rng.random((n, k)) < 0.6, rng.random((n, k)) < 0.6
    assert M.step_agreement(t.tolist(), s.tolist(), reduction="none").numpy() == pytest.approx((t & s).mean(1))
    tv, sv = rng.integers(0, 3, (n, k)), rng.integers(0, 3, (n, k))
    assert M.step_agreement(tv.tolist(), sv.tolist()) == pytest.approx((tv == sv).mean(1).mean())
