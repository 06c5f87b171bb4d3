"""Fidelity: agreement and divergences against independent formulas, endpoints and properties."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlens import measures as M


def logits_pair(n=64, c=5, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, c, generator=g), scale * torch.randn(n, c, generator=g)


def test_agreement_hand_values():
    teacher = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 3.0, 0.0]])
    student = torch.tensor([[1.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.5, 0.0]])
    assert M.agreement(teacher, student) == 0.75
    assert M.agreement(teacher, student, reduction="none").tolist() == [True, False, True, True]


def test_streaming_agreement_equals_functional():
    t, s = logits_pair(n=103)
    metric = M.Agreement()
    for a, b in zip(t.split(10), s.split(10), strict=True):
        metric.update(a, b)
    assert float(metric.compute()) == M.agreement(t, s)


def test_kl_two_point_hand_value_and_direction():
    p, q = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.9, 0.1]])
    forward = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    reverse = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert M.kl_divergence(p.log(), q.log()) == pytest.approx(forward, rel=1e-6)
    assert M.kl_divergence(p.log(), q.log(), reverse=True) == pytest.approx(reverse, rel=1e-6)


def test_kl_matches_torch_kl_div_with_its_argument_order():
    t, s = logits_pair()
    for temperature in (1.0, 4.0):
        # F.kl_div(input, target) computes KL(target || input) with input given as log-probabilities.
        expected = F.kl_div(F.log_softmax(s.double() / temperature, -1), F.log_softmax(t.double() / temperature, -1),
                            reduction="none", log_target=True).sum(-1)
        torch.testing.assert_close(M.kl_divergence(t, s, temperature, reduction="none"), expected)
        assert M.kl_divergence(t, s, temperature) == pytest.approx(float(expected.mean()), rel=1e-12)


def test_kl_stays_finite_for_saturated_logits():
    teacher, student = torch.tensor([[200.0, -200.0]]), torch.tensor([[-200.0, 200.0]])
    assert M.kl_divergence(teacher, student) == pytest.approx(400.0, rel=1e-9)  # softmax underflows to 0 here


def test_js_endpoints_symmetry_and_formula():
    assert M.js_divergence(torch.tensor([[60.0, 0.0]]), torch.tensor([[0.0, 60.0]])) == pytest.approx(math.log(2))
    t, s = logits_pair()
    assert M.js_divergence(t, s) == pytest.approx(M.js_divergence(s, t), rel=1e-12)
    p, q = t.double().softmax(-1), s.double().softmax(-1)
    m = (p + q) / 2
    expected = 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)
    torch.testing.assert_close(M.js_divergence(t, s, reduction="none"), expected)


def test_total_variation_endpoints_and_formula():
    assert M.total_variation(torch.tensor([[60.0, 0.0]]), torch.tensor([[0.0, 60.0]])) == pytest.approx(1.0)
    t, s = logits_pair()
    expected = 0.5 * (t.double().softmax(-1) - s.double().softmax(-1)).abs().sum(-1)
    torch.testing.assert_close(M.total_variation(t, s, reduction="none"), expected)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40), st.integers(2, 8), st.floats(0.1, 10.0), st.integers(0, 10_000))
def test_divergences_are_nonnegative_bounded_and_zero_on_identity(n, c, temperature, seed):
    t, s = logits_pair(n, c, seed)
    for fn in (M.kl_divergence, M.js_divergence, M.total_variation):
        assert fn(t, t, temperature) == pytest.approx(0.0, abs=1e-12)
        assert fn(t, s, temperature) >= 0
    assert M.js_divergence(t, s, temperature) <= math.log(2) + 1e-12
    assert M.total_variation(t, s, temperature) <= 1 + 1e-12
    # Pinsker: TV <= sqrt(KL / 2)
    assert M.total_variation(t, s, temperature, reduction="none").max() <= (
        M.kl_divergence(t, s, temperature, reduction="none") / 2).sqrt().max() + 1e-9


def test_high_temperature_flattens_distributions():
    t, s = logits_pair()
    assert M.kl_divergence(t, s, temperature=1000.0) < 1e-4 < M.kl_divergence(t, s)
