"""Calibration: hand-computed bin-edge fixtures, properties, streaming == functional, temperature, intervals."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlens import measures as M


def two_class(confidences, dtype=torch.float64):
    """(n, 2) probabilities whose top-label confidence is exactly each given value (>= 0.5)."""
    c = torch.tensor(confidences, dtype=dtype)
    return torch.stack([c, 1 - c], dim=1)


def test_edge_values_fall_in_the_bin_they_close():
    # (a, b]: a confidence equal to an edge k/n_bins belongs to the bin that ends there.
    curve = M.reliability_curve(two_class([0.5, 0.75, 1.0]), torch.tensor([0, 0, 0]), n_bins=4)
    assert curve.count.tolist() == [0, 1, 1, 1]  # 0.5 -> (0.25, 0.5], 0.75 -> (0.5, 0.75], 1.0 -> (0.75, 1]
    curve = M.reliability_curve(two_class([0.5]), torch.tensor([0]), n_bins=2)
    assert curve.count.tolist() == [1, 0]


def test_one_is_in_the_last_bin_not_a_phantom_bin():
    curve = M.reliability_curve(two_class([1.0, 1.0]), torch.tensor([0, 1]), n_bins=15)
    assert curve.count.shape == (15,)
    assert curve.count[-1] == 2
    assert M.expected_calibration_error(two_class([1.0, 1.0]), torch.tensor([0, 1]), n_bins=15) == 0.5


def test_decimal_edges_use_the_correctly_rounded_double():
    # 0.3 and 3/10 are the same double, so 0.3 closes bin (0.2, 0.3]; the next double up opens (0.3, 0.4].
    above = float(np.nextafter(0.7, 1.0))
    curve = M.reliability_curve(two_class([0.7, above]), torch.tensor([0, 0]), n_bins=10)
    assert curve.count[6] == 1 and curve.count[7] == 1


def test_zero_falls_in_the_first_bin_for_classwise_ece():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert M.classwise_expected_calibration_error(probs, torch.tensor([0, 1]), n_bins=5) == 0.0
    probs = torch.tensor([[0.0, 1.0]], dtype=torch.float64)  # class 0: p = 0 (bin 0), truth 1: gap 1
    assert M.classwise_expected_calibration_error(probs, torch.tensor([0]), n_bins=5) == 1.0


def test_hand_computed_ece_for_each_norm():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])  # float32: 0.9 and 0.8 share (0.8, 0.9]
    labels = torch.tensor([0, 1, 1])
    # bin (0.8, 0.9]: conf (0.9 + 0.8) / 2, acc 1/2; bin (0.6, 0.7]: conf 0.7, acc 1.
    conf_a = (float(np.float32(0.9)) + float(np.float32(0.8))) / 2
    gap_a, gap_b = abs(0.5 - conf_a), abs(1 - float(np.float32(0.7)))
    expected = {"l1": 2 / 3 * gap_a + 1 / 3 * gap_b, "l2": math.sqrt(2 / 3 * gap_a**2 + 1 / 3 * gap_b**2),
                "max": max(gap_a, gap_b)}
    for norm, value in expected.items():
        assert M.expected_calibration_error(probs, labels, n_bins=10, norm=norm) == pytest.approx(value, abs=1e-15)


def test_mass_binning_groups_by_rank():
    probs = two_class([0.55, 0.6, 0.9, 0.95])
    labels = torch.tensor([1, 1, 0, 0])  # low-confidence pair wrong, high pair right
    curve = M.reliability_curve(probs, labels, n_bins=2, binning="mass")
    assert curve.count.tolist() == [2, 2]
    assert curve.accuracy.tolist() == [0.0, 1.0]
    expected = 0.5 * (0.575 - 0.0) + 0.5 * (1.0 - 0.925)
    assert M.expected_calibration_error(probs, labels, n_bins=2, binning="mass") == pytest.approx(expected)
    assert curve.edges[0] == 0 and curve.edges[-1] == 1


def test_reliability_curve_counts_accuracy_and_empty_bins():
    probs = two_class([0.55, 0.58, 0.95])
    curve = M.reliability_curve(probs, torch.tensor([0, 1, 0]), n_bins=10)
    assert int(curve.count.sum()) == 3
    assert curve.accuracy[5] == 0.5 and curve.confidence[5] == pytest.approx(0.565)
    assert torch.isnan(curve.accuracy[0]) and torch.isnan(curve.confidence[0])
    torch.testing.assert_close(curve.edges, torch.linspace(0, 1, 11, dtype=torch.float64))


def random_probs(n, c, seed, dtype=torch.float64, sharpness=2.0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(sharpness * torch.randn(n, c, generator=g, dtype=torch.float64), -1).to(dtype)
    labels = torch.randint(0, c, (n,), generator=g)
    return probs, labels


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 200), st.integers(2, 6), st.integers(1, 30), st.sampled_from(["width", "mass"]),
       st.sampled_from(["l1", "l2", "max"]), st.integers(0, 10_000))
def test_ece_is_in_unit_interval(n, c, n_bins, binning, norm, seed):
    probs, labels = random_probs(n, c, seed)
    assert 0.0 <= M.expected_calibration_error(probs, labels, n_bins, binning, norm) <= 1.0
    assert 0.0 <= M.classwise_expected_calibration_error(probs, labels, n_bins, norm) <= 1.0


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 120), st.lists(st.integers(1, 50), min_size=1, max_size=6), st.integers(1, 20),
       st.sampled_from(["l1", "l2", "max"]), st.integers(0, 10_000))
def test_streaming_ece_equals_functional_for_any_split(n, sizes, n_bins, norm, seed):
    probs, labels = random_probs(n, 4, seed, dtype=torch.float32)
    metric = M.CalibrationError(n_bins=n_bins, norm=norm)
    bounds = [b for b in np.cumsum([0] + sizes * 200) if b < n] + [n]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        metric.update(probs[start:stop], labels[start:stop])
    expected = M.expected_calibration_error(probs, labels, n_bins=n_bins, norm=norm)
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_float32_probs_give_the_float64_answer():
    probs, labels = random_probs(200_000, 10, seed=1, dtype=torch.float32)
    ece32 = M.expected_calibration_error(probs, labels)
    ece64 = M.expected_calibration_error(probs.double(), labels)
    assert ece32 == pytest.approx(ece64, rel=1e-12)


def test_calibrated_model_has_small_ece_and_overconfident_model_large():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(2 * torch.randn(100_000, 5, generator=g, dtype=torch.float64), -1)
    labels = torch.multinomial(probs, 1, generator=g).squeeze(1)
    assert M.expected_calibration_error(probs, labels) < 0.01
    overconfident = torch.softmax(3 * torch.log(probs), -1)
    assert M.expected_calibration_error(overconfident, labels) > 0.1


def test_labels_covering_fewer_classes_than_probs():
    probs, _ = random_probs(300, 6, seed=2)
    labels = torch.randint(0, 2, (300,), generator=torch.Generator().manual_seed(2))  # only classes 0 and 1
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    bins = np.clip(np.ceil(conf.numpy() * 15).astype(int) - 1, 0, 14)
    expected = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
                   for b in range(15) if (bins == b).any())
    assert M.expected_calibration_error(probs, labels) == pytest.approx(float(expected), rel=1e-12)
    assert M.classwise_expected_calibration_error(probs, labels) > 0
    assert M.brier_score(probs, labels) > 0


def test_brier_score_hand_values_and_range():
    assert M.brier_score(torch.tensor([[0.5, 0.5]]), torch.tensor([0])) == pytest.approx(0.5)
    assert M.brier_score(torch.tensor([[0.0, 1.0]]), torch.tensor([0])) == pytest.approx(2.0)
    assert M.brier_score(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([0])) == 0.0
    probs, labels = random_probs(50, 4, seed=3)
    one_hot = torch.nn.functional.one_hot(labels, 4).double()
    per_example = ((probs - one_hot) ** 2).sum(1)
    torch.testing.assert_close(M.brier_score(probs, labels, reduction="none"), per_example)


def test_nll_hand_values_and_zero_probability():
    assert M.negative_log_likelihood(torch.tensor([[0.25, 0.75]]), torch.tensor([1])) == pytest.approx(-math.log(0.75))
    assert M.negative_log_likelihood(torch.tensor([[1.0, 0.0]]), torch.tensor([1])) == math.inf


def test_fit_temperature_recovers_the_generating_temperature():
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(40_000, 6, generator=g, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(logits / 2.5, -1), 1, generator=g).squeeze(1)
    temperature = M.fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.5, rel=0.03)

    def nll(t):
        return float(torch.nn.functional.cross_entropy(logits / t, labels))

    grid = np.linspace(temperature * 0.98, temperature * 1.02, 41)  # brute force: no grid point beats it
    assert nll(temperature) <= min(nll(t) for t in grid) + 1e-12


def test_fit_temperature_leaves_argmax_unchanged_and_lowers_nll():
    g = torch.Generator().manual_seed(1)
    logits = 5 * torch.randn(500, 4, generator=g)
    labels = torch.multinomial(torch.softmax(logits / 3, -1), 1, generator=g).squeeze(1)
    temperature = M.fit_temperature(logits, labels)
    assert torch.equal((logits / temperature).argmax(-1), logits.argmax(-1))
    before = M.negative_log_likelihood(logits.double().softmax(-1), labels)
    after = M.negative_log_likelihood((logits.double() / temperature).softmax(-1), labels)
    assert after <= before


def test_fit_temperature_warns_at_a_bound():
    logits = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    with pytest.warns(UserWarning, match="below T_min"):
        assert M.fit_temperature(logits, torch.tensor([0, 1])) == 0.01


def test_bootstrap_ece_interval_is_reproducible_and_tightens_with_n():
    probs, labels = random_probs(400, 3, seed=4)
    small = M.bootstrap_ece(probs, labels, n_resamples=300, seed=1)
    assert small == M.bootstrap_ece(probs, labels, n_resamples=300, seed=1)
    assert small.low <= small.estimate <= small.high
    assert small.estimate == M.expected_calibration_error(probs, labels)
    probs, labels = random_probs(10_000, 3, seed=4)
    large = M.bootstrap_ece(probs, labels, n_resamples=300, seed=1)
    assert large.high - large.low < small.high - small.low


def test_vectorised_bootstrap_matches_a_plain_loop():
    probs, labels = random_probs(120, 3, seed=5)
    ci = M.bootstrap_ece(probs, labels, n_bins=7, n_resamples=30, seed=3)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 120, (30, 120), generator=g)
    replicates = torch.tensor([M.expected_calibration_error(probs[i], labels[i], n_bins=7) for i in idx],
                              dtype=torch.float64)
    q = torch.quantile(replicates, torch.tensor([0.025, 0.975], dtype=torch.float64))
    assert (ci.low, ci.high) == pytest.approx((float(q[0]), float(q[1])), rel=1e-12)


def test_paired_difference_is_zero_for_identical_models_and_signed_correctly():
    g = torch.Generator().manual_seed(6)
    teacher = torch.softmax(2 * torch.randn(3000, 4, generator=g, dtype=torch.float64), -1)
    labels = torch.multinomial(teacher, 1, generator=g).squeeze(1)  # the teacher is calibrated by construction
    student = torch.softmax(4 * torch.log(teacher), -1)  # over-confident
    for measure in ("ece", "nll", "brier"):
        same = M.bootstrap_paired_difference(teacher, teacher, labels, measure, n_resamples=100)
        assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
        gap = M.bootstrap_paired_difference(teacher, student, labels, measure, n_resamples=200)
        assert gap.high < 0, measure  # teacher minus student: the teacher is better calibrated
    nll_gap = M.bootstrap_paired_difference(teacher, student, labels, "nll", n_resamples=10)
    expected = M.negative_log_likelihood(teacher, labels) - M.negative_log_likelihood(student, labels)
    assert nll_gap.estimate == pytest.approx(expected, rel=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 50), st.integers(0, 50), st.integers(-3, 3), st.booleans())
def test_bin_index_follows_the_documented_edges_exactly(n_bins, k, ulps, as_float32):
    from fractions import Fraction

    from kdlens.measures.calibration import width_bin_index

    value = min(k, n_bins) / n_bins  # an edge, then nudged a few ulps either side
    for _ in range(abs(ulps)):
        value = float(np.nextafter(value, 2.0 if ulps > 0 else -1.0))
    value = min(max(value, 0.0), 1.0)
    if as_float32:
        value = float(np.float32(value))
    # The documented edges are the doubles nearest j / n_bins; bin b holds (edge_b, edge_b+1]: count the inner
    # edges strictly below the value, in exact rational arithmetic.
    edges = [Fraction(j / n_bins) for j in range(1, n_bins)]
    expected = sum(edge < Fraction(value) for edge in edges)
    dtype = torch.float32 if as_float32 else torch.float64
    assert int(width_bin_index(torch.tensor([value], dtype=dtype), n_bins)[0]) == expected


def test_confidence_ece_equals_top_label_ece_on_the_same_confidences():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(500, 5, generator=g) * 2, dim=-1)
    labels = torch.randint(0, 5, (500,), generator=g)
    confidence, prediction = probs.max(-1)
    for norm in ("l1", "l2", "max"):
        assert M.confidence_calibration_error(confidence, prediction == labels, n_bins=12, norm=norm) == \
            pytest.approx(M.expected_calibration_error(probs, labels, n_bins=12, norm=norm), abs=1e-12)


def test_confidence_reliability_curve_equals_the_top_label_curve():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(300, 4, generator=g) * 3, dim=-1)
    labels = torch.randint(0, 4, (300,), generator=g)
    confidence, prediction = probs.max(-1)
    mine, reference = M.confidence_reliability_curve(confidence, prediction == labels, 8), \
        M.reliability_curve(probs, labels, 8)
    for got, expected in zip(mine, reference, strict=True):
        torch.testing.assert_close(got, expected, equal_nan=True)


def test_confidence_ece_by_hand():
    # bins of width 0.5: (0, 0.5] holds 0.2 (wrong), (0.5, 1] holds 0.9 (right) and 0.6 (wrong)
    value = M.confidence_calibration_error(torch.tensor([0.2, 0.9, 0.6]), torch.tensor([0, 1, 0]), n_bins=2)
    assert value == pytest.approx((1 / 3) * 0.2 + (2 / 3) * abs(0.5 - 0.75))


@pytest.mark.parametrize("confidence, correct, message", [
    (torch.tensor([1.2]), torch.tensor([True]), "in \\[0, 1\\]"),
    (torch.tensor([-0.1]), torch.tensor([True]), "in \\[0, 1\\]"),
    (torch.tensor([float("nan")]), torch.tensor([True]), "finite"),
    (torch.tensor([]), torch.tensor([], dtype=torch.bool), "non-empty"),
    (torch.tensor([0.5, 0.5]), torch.tensor([True]), "same length|same number"),
    (torch.tensor([0.5]), torch.tensor([2]), "bool or 0/1"),
])
@pytest.mark.parametrize("measure", [M.confidence_calibration_error, M.confidence_reliability_curve])
def test_confidence_ece_bad_inputs(confidence, correct, message, measure):
    with pytest.raises(ValueError, match=message):
        measure(confidence, correct)
