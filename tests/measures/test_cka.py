"""CKA: properties (hypothesis), an independent Gram-matrix reference, streaming == functional, intervals."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlens import measures as M


def reference_cka(x: np.ndarray, y: np.ndarray, debiased: bool, kernel=None) -> float:
    """Textbook CKA from n x n Gram matrices in plain numpy (Kornblith 2019 eq. 3; Song 2012 eq. 5)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    k = kernel(x) if kernel else x @ x.T
    l = kernel(y) if kernel else y @ y.T  # noqa: E741
    n = k.shape[0]

    def hsic(k, l):  # noqa: E741
        if not debiased:
            h = np.eye(n) - np.ones((n, n)) / n
            return np.trace(k @ h @ l @ h) / (n - 1) ** 2
        kt, lt = k.copy(), l.copy()
        np.fill_diagonal(kt, 0)
        np.fill_diagonal(lt, 0)
        one = np.ones(n)
        total = np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        total -= 2.0 / (n - 2) * (one @ kt @ lt @ one)
        return total / (n * (n - 3))

    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def related(n=120, d1=12, d2=7, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1)) + offset
    y = x[:, :d2] @ rng.normal(size=(d2, d2)) + rng.normal(size=(n, d2))
    return x, y


def matrices(min_n=6, max_n=40, max_d=8):
    return st.tuples(st.integers(min_n, max_n), st.integers(1, max_d), st.integers(1, max_d),
                     st.integers(0, 2**31 - 1))


def draw(params):
    n, d1, d2, seed = params
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d1, generator=g, dtype=torch.float64), torch.randn(n, d2, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_linear_cka_matches_gram_reference(debiased, offset):
    x, y = related()
    # CKA is shift invariant; the raw-Gram reference is not numerically (cancellation), so it sees unshifted data.
    expected = reference_cka(x, y, debiased)
    assert M.linear_cka(x + offset, y, debiased=debiased) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_gram_route_when_wider_than_long_matches_reference(debiased):
    x, y = related(n=20, d1=300, d2=250)
    assert M.linear_cka(x, y, debiased=debiased) == pytest.approx(reference_cka(x, y, debiased), rel=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_cka_matches_reference(debiased):
    x, y = related(n=60)

    def kernel_with(sigma):
        def kernel(f):
            d2 = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)
            median = np.median(np.sqrt(d2[np.triu_indices(len(f), 1)]))
            return np.exp(-d2 / (2 * (sigma * median) ** 2))
        return kernel

    for sigma in (0.5, 0.8, 2.0):
        expected = reference_cka(x, y, debiased, kernel_with(sigma))
        assert M.rbf_cka(x, y, sigma=sigma, debiased=debiased) == pytest.approx(expected, rel=1e-10)


@settings(max_examples=40, deadline=None)
@given(matrices())
def test_cka_of_x_with_itself_is_one(params):
    x, _ = draw(params)
    assert M.linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)
    assert M.linear_cka(x, x, debiased=True) == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(matrices())
def test_cka_is_symmetric_and_bounded(params):
    x, y = draw(params)
    value = M.linear_cka(x, y)
    assert value == pytest.approx(M.linear_cka(y, x), rel=1e-12)
    assert -1e-12 <= value <= 1 + 1e-12
    assert M.linear_cka(x, y, debiased=True) == pytest.approx(M.linear_cka(y, x, debiased=True), rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(matrices(), st.floats(0.01, 100.0), st.floats(-10, 10))
def test_invariant_to_orthogonal_maps_isotropic_scaling_and_shifts(params, scale, shift):
    x, y = draw(params)
    q, _ = torch.linalg.qr(torch.randn(x.shape[1], x.shape[1], generator=torch.Generator().manual_seed(1),
                                       dtype=torch.float64))
    for debiased in (False, True):
        base = M.linear_cka(x, y, debiased=debiased)
        moved = M.linear_cka(scale * x @ q + shift, y, debiased=debiased)
        assert moved == pytest.approx(base, rel=1e-7, abs=1e-9)


def test_not_invariant_to_general_linear_maps():
    x, y = related(n=200, d1=6, d2=6)
    stretch = np.diag([1.0, 1.0, 1.0, 1.0, 1.0, 25.0])
    assert abs(M.linear_cka(x @ stretch, y) - M.linear_cka(x, y)) > 0.05


def test_debiased_cka_is_near_zero_for_independent_data_where_biased_is_not():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(100, 200, generator=g), torch.randn(100, 200, generator=g)
    assert abs(M.linear_cka(x, y, debiased=True)) < 0.02
    assert M.linear_cka(x, y) > 0.3  # the biased estimate is inflated when d is comparable to n


def test_float32_input_gives_the_float64_answer():
    x, y = related(n=3000, d1=64, d2=32, offset=5.0)
    exact = M.linear_cka(x, y)
    as_float32 = M.linear_cka(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    exact_of_rounded = M.linear_cka(np.float32(x).astype(np.float64), np.float32(y).astype(np.float64))
    assert as_float32 == pytest.approx(exact_of_rounded, rel=1e-12)  # no precision lost after the input
    assert as_float32 == pytest.approx(exact, rel=1e-6)


def test_numpy_and_torch_inputs_agree():
    x, y = related()
    assert M.linear_cka(x, y) == M.linear_cka(torch.from_numpy(x), torch.from_numpy(y))


@settings(max_examples=30, deadline=None)
@given(matrices(min_n=8, max_n=60), st.lists(st.integers(1, 20), min_size=1, max_size=8), st.booleans())
def test_streaming_linear_cka_equals_functional_for_any_split(params, sizes, debiased):
    x, y = draw(params)
    x = x + 3.0  # an offset exercises the centring of raw moments
    metric = M.LinearCKA(debiased=debiased)
    start = 0
    for size in sizes * 10:
        if start >= x.shape[0]:
            break
        metric.update(x[start:start + size], y[start:start + size])
        start += size
    if start < x.shape[0]:
        metric.update(x[start:], y[start:])
    expected = M.linear_cka(x, y, debiased=debiased)
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_cka_matrix_equals_pairwise_cka_and_streaming_matrix():
    x, y = related(n=150, d1=10, d2=6)
    a = {"block1": x, "block2": np.tanh(x), "head": x[:, :3]}
    b = {"fc1": y, "fc2": y ** 2}
    for debiased in (False, True):
        matrix = M.cka_matrix(a, b, debiased=debiased)
        assert matrix.shape == (3, 2)
        for i, fa in enumerate(a.values()):
            for j, fb in enumerate(b.values()):
                assert float(matrix[i, j]) == pytest.approx(M.linear_cka(fa, fb, debiased=debiased), rel=1e-12)
        streaming = M.CKAMatrix(list(a), list(b), debiased=debiased)
        for rows in np.array_split(np.arange(150), 7):
            streaming.update({k: v[rows] for k, v in a.items()}, {k: v[rows] for k, v in b.items()})
        torch.testing.assert_close(streaming.compute(), matrix, rtol=1e-9, atol=1e-12)


def test_rbf_cka_matrix_equals_pairwise():
    x, y = related(n=50)
    matrix = M.cka_matrix({"a": x, "b": x ** 3}, {"c": y}, kernel="rbf", sigma=0.6)
    assert float(matrix[1, 0]) == pytest.approx(M.rbf_cka(x ** 3, y, sigma=0.6), rel=1e-12)


def test_streaming_matrix_names_missing_layer_with_suggestion():
    metric = M.CKAMatrix(["layer1.conv"], ["fc"])
    with pytest.raises(KeyError, match=r"no 'layer1.conv'.*Did you mean 'layer1.conv1'"):
        metric.update({"layer1.conv1": torch.randn(8, 3)}, {"fc": torch.randn(8, 2)})


def test_minibatch_cka_single_batch_equals_debiased_cka():
    x, y = related(n=64)
    metric = M.MinibatchCKA()
    metric.update(x, y)
    assert float(metric.compute()) == pytest.approx(M.linear_cka(x, y, debiased=True), rel=1e-12)


def test_minibatch_cka_averages_hsic_over_batches():
    x, y = related(n=400)
    metric = M.MinibatchCKA()
    batches = np.array_split(np.arange(400), 5)
    for rows in batches:
        metric.update(x[rows], y[rows])
    ref_xy, ref_xx, ref_yy = 0.0, 0.0, 0.0
    for rows in batches:  # mean unbiased HSIC per batch, Nguyen et al. 2021 eq. 3
        xb, yb = x[rows], y[rows]
        n = len(rows)
        for target, (p, q) in (("xy", (xb, yb)), ("xx", (xb, xb)), ("yy", (yb, yb))):
            k, l = p @ p.T, q @ q.T  # noqa: E741
            np.fill_diagonal(k, 0)
            np.fill_diagonal(l, 0)
            one = np.ones(n)
            h = np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (
                one @ k @ l @ one)
            h /= n * (n - 3)
            if target == "xy":
                ref_xy += h
            elif target == "xx":
                ref_xx += h
            else:
                ref_yy += h
    assert float(metric.compute()) == pytest.approx(ref_xy / math.sqrt(ref_xx * ref_yy), rel=1e-10)


def test_minibatch_cka_rejects_batches_smaller_than_four():
    metric = M.MinibatchCKA()
    with pytest.raises(ValueError, match=r"Expected `x` to be at least 4 examples for debiased"):
        metric.update(torch.randn(3, 5), torch.randn(3, 5))


def test_token_inputs_need_an_explicit_pool_policy():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 5, 8, generator=g), torch.randn(20, 5, 4, generator=g)
    with pytest.raises(ValueError, match=r'pool="mean".*pool="flatten"'):
        M.linear_cka(x, y)
    assert M.linear_cka(x, y, pool="mean") == pytest.approx(M.linear_cka(x.mean(1), y.mean(1)), rel=1e-12)
    assert M.linear_cka(x, y, pool="flatten") == pytest.approx(
        M.linear_cka(x.reshape(20, -1), y.reshape(20, -1)), rel=1e-12)
    metric = M.LinearCKA(pool="mean")
    metric.update(x, y)
    assert float(metric.compute()) == pytest.approx(M.linear_cka(x, y, pool="mean"), rel=1e-9)


def test_constant_features_raise_instead_of_nan():
    with pytest.raises(ValueError, match="features that vary across examples"):
        M.linear_cka(torch.ones(10, 3), torch.randn(10, 3))


@settings(max_examples=30, deadline=None)
@given(matrices(), st.integers(-300, 300), st.integers(-300, 300))
def test_every_cka_is_the_same_at_any_finite_magnitude(params, power_x, power_y):
    """Features at 1e200 used to overflow their fourth powers (silently 0.0, or "constant features"); every
    functional CKA now equals the unit-scale value from 1e-300 to 1e300."""
    x, y = draw(params)
    big_x, big_y = x * 10.0**power_x, y * 10.0**power_y
    for debiased in (False, True):
        assert M.linear_cka(big_x, big_y, debiased) == pytest.approx(M.linear_cka(x, y, debiased), rel=1e-9,
                                                                     abs=1e-12)
        assert M.rbf_cka(big_x, big_y, debiased=debiased) == pytest.approx(M.rbf_cka(x, y, debiased=debiased),
                                                                           rel=1e-9, abs=1e-12)
    matrix = M.cka_matrix({"x": big_x}, {"y": big_y, "x": big_x})
    assert torch.allclose(matrix, M.cka_matrix({"x": x}, {"y": y, "x": x}), rtol=1e-9, atol=1e-12)


def test_the_power_of_two_rescaling_rounds_nothing():
    x, y = draw((30, 5, 4, 7))
    assert M.linear_cka(x * 2.0**600, y * 2.0**-900) == M.linear_cka(x, y)


def test_streaming_cka_names_features_too_large_for_its_sums():
    x, y = draw((30, 5, 4, 7))
    for metric, update in ((M.LinearCKA(), lambda m: m.update(x * 1e200, y)),
                           (M.CKAMatrix(["a"], ["b"]), lambda m: m.update({"a": x}, {"b": y * 1e-100}))):
        with pytest.raises(ValueError, match=r"magnitude between 1e-60 and 1e\+60.*Multiply the features by one "
                                             r"constant"):
            update(metric)


def test_minibatch_cka_names_an_overflow_instead_of_calling_it_constant():
    x, y = draw((30, 5, 4, 7))
    metric = M.MinibatchCKA()
    metric.update(x * 1e100, y)
    with pytest.raises(ValueError, match=r"finite HSIC sums, but got (nan|inf) \(float64 overflowed\)"):
        metric.compute()


def test_permutation_test_detects_signal_and_not_noise():
    x, y = related(n=80)
    signal = M.cka_permutation_test(x, y, n_permutations=199, seed=1)
    assert signal.p_value == pytest.approx(1 / 200)
    assert signal.statistic == pytest.approx(M.linear_cka(x, y))
    p_values = []
    for seed in range(20):  # independent data: p-values roughly uniform
        g = torch.Generator().manual_seed(seed)
        noise = M.cka_permutation_test(torch.randn(80, 6, generator=g), torch.randn(80, 4, generator=g),
                                       n_permutations=99, seed=seed)
        p_values.append(noise.p_value)
    assert noise.null.shape == (99,)
    assert 0.3 < np.mean(p_values) < 0.7
    assert sum(p < 0.05 for p in p_values) <= 3


def test_permutation_null_matches_direct_recomputation():
    x, y = related(n=30, d1=50, d2=40)  # n^2 < n d1 d2: the Gram route
    result = M.cka_permutation_test(x, y, n_permutations=5, debiased=True, seed=7)
    g = torch.Generator().manual_seed(7)
    for k in range(5):
        perm = torch.randperm(30, generator=g).numpy()
        assert float(result.null[k]) == pytest.approx(M.linear_cka(x, y[perm], debiased=True), rel=1e-9)


def test_bootstrap_interval_is_reproducible_and_covers_truth_for_debiased():
    w = np.random.default_rng(1).normal(size=(8, 5))

    def sample(n, seed):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, 8))
        return x, x @ w + 3 * rng.normal(size=(n, 5))

    truth = M.linear_cka(*sample(200_000, 99))
    covered = 0
    for seed in range(20):
        x, y = sample(150, seed)
        ci = M.cka_bootstrap_interval(x, y, n_resamples=150, debiased=True, seed=seed)
        assert ci == M.cka_bootstrap_interval(x, y, n_resamples=150, debiased=True, seed=seed)
        assert ci.low < ci.high
        covered += ci.low <= truth <= ci.high
    assert covered >= 17  # nominal 95%: 17 of 20 or more
