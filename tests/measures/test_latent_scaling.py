"""Latent Scaling: each beta against numpy least squares on the stacked ``f_j d`` and target, planted exclusive,
Complete-Shrinkage and Latent-Decoupling latents, streaming == one call, the classification rule, bad input."""

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlens.measures.latent_scaling import LatentScaling, classify_exclusive, latent_betas, latent_scaling
from kdlens.measures.merging import merge_states

TEMPLATE = r"Expected `{name}`( and `[^`]+`)? to \w+ .+, but got .+"


def lstsq_beta(fj: np.ndarray, d: np.ndarray, y: np.ndarray) -> float:
    """argmin_b ||b (fj d) - y||^2 over every token and dimension, by numpy's least squares; NaN for a zero column."""
    column = (fj[:, None] * d[None, :]).reshape(-1, 1)  # (N dim, 1)
    if not column.any():
        return math.nan
    return float(np.linalg.lstsq(column, y.reshape(-1), rcond=None)[0][0])


def reference(xs, xhats, f, W_dec, latents, owners) -> dict[str, np.ndarray]:
    """The four betas and two ratios, target by target, materialising every target."""
    xs, xhats, W_dec = [x.numpy() for x in xs], [x.numpy() for x in xhats], [w.numpy() for w in W_dec]
    f = f.numpy()
    out = {key: [] for key in ("reconstruction_owner", "reconstruction_other", "error_owner", "error_other")}
    for j, owner in zip(latents, owners, strict=True):
        d, fj = W_dec[owner][j], f[:, j]
        for role, m in (("owner", owner), ("other", 1 - owner)):
            error_target = xs[m] - (xhats[m] - fj[:, None] * W_dec[m][j][None, :])  # (N, dim)
            out[f"reconstruction_{role}"].append(lstsq_beta(fj, d, xhats[m]))
            out[f"error_{role}"].append(lstsq_beta(fj, d, error_target))
    out = {f"beta_{key}": np.array(values) for key, values in out.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["nu_reconstruction"] = out["beta_reconstruction_other"] / out["beta_reconstruction_owner"]
        out["nu_error"] = out["beta_error_other"] / out["beta_error_owner"]
    return out


def random_case(seed: int, n: int, n_latents: int, dim: int, k: int):
    g = torch.Generator().manual_seed(seed)
    f = torch.relu(torch.randn(n, n_latents, generator=g, dtype=torch.float64))  # about half the entries 0
    W_dec = [torch.randn(n_latents, dim, generator=g, dtype=torch.float64) for _ in range(2)]
    xs = [torch.randn(n, dim, generator=g, dtype=torch.float64) for _ in range(2)]
    xhats = [f @ w + torch.randn(dim, generator=g, dtype=torch.float64) for w in W_dec]  # with a decoder bias
    latents = torch.randint(0, n_latents, (k,), generator=g)
    owners = torch.randint(0, 2, (k,), generator=g)
    return xs, xhats, f, W_dec, latents, owners


def assert_matches(out: dict, expected: dict) -> None:
    assert set(out) == set(expected)
    for key, value in expected.items():
        got = out[key].reshape(-1).numpy()
        assert out[key].dtype == torch.float64
        np.testing.assert_allclose(got, value, rtol=1e-8, atol=1e-10, err_msg=key)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 30), st.integers(1, 6), st.integers(1, 5), st.integers(1, 6))
def test_every_beta_and_ratio_matches_least_squares(seed, n, n_latents, dim, k):
    case = random_case(seed, n, n_latents, dim, k)
    xs, xhats, f, W_dec, latents, owners = case
    assert_matches(latent_scaling(*case), reference(xs, xhats, f, W_dec, latents.tolist(), owners.tolist()))


def test_a_latent_that_never_fires_has_nan_betas():
    xs, xhats, f, W_dec, _, _ = random_case(0, 20, 3, 4, 1)
    f[:, 1] = 0
    out = latent_scaling(xs, xhats, f, W_dec, [1, 0], [0, 1])
    for value in out.values():
        assert math.isnan(value[0]) and not math.isnan(value[1])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 20), st.integers(1, 4), st.integers(1, 5), st.booleans())
def test_latent_betas_match_least_squares(seed, n, k, dim, per_latent):
    g = torch.Generator().manual_seed(seed)
    f = torch.relu(torch.randn(n, k, generator=g, dtype=torch.float64))
    d = torch.randn(k, dim, generator=g, dtype=torch.float64)
    y = torch.randn(*((n, k, dim) if per_latent else (n, dim)), generator=g, dtype=torch.float64)
    expected = [lstsq_beta(f[:, i].numpy(), d[i].numpy(), (y[:, i] if per_latent else y).numpy()) for i in range(k)]
    np.testing.assert_allclose(latent_betas(f, d, y).numpy(), expected, rtol=1e-8, atol=1e-10)


# -- planted latents: hand-made activations, reconstructions and decoders (no training) ---------------------------

N, DIM = 4000, 4
E = torch.eye(DIM, dtype=torch.float64)


def planted(other_has_direction: bool, other_row_zero: bool, decoupled: bool, noise: float = 0.05):
    """Latent 0 exclusive to model 1 (direction 0.7 e0), latent 1 shared (e1), latent 2 writing e0 into model 0's
    reconstruction on the same tokens as latent 0 when ``decoupled``. Returns latent_scaling of latents 0 and 1."""
    g = torch.Generator().manual_seed(0)
    f = torch.relu(torch.randn(N, 3, generator=g, dtype=torch.float64))
    f[:, 2] = f[:, 0] if decoupled else 0.0
    d = 0.7 * E[0]
    W_dec = [torch.stack([torch.zeros(DIM, dtype=torch.float64) if other_row_zero else d, E[1],
                          d if decoupled else torch.zeros(DIM, dtype=torch.float64)]),
             torch.stack([d, E[1], torch.zeros(DIM, dtype=torch.float64)])]
    background = [torch.randn(N, 2, generator=g, dtype=torch.float64) @ E[2:] for _ in range(2)]  # e2, e3 only
    xs = [f[:, 1:2] * E[1] + background[0] + (f[:, 0:1] * d if other_has_direction else 0.0),
          f[:, 0:1] * d + f[:, 1:2] * E[1] + background[1]]
    xs = [x + noise * torch.randn(N, DIM, generator=g, dtype=torch.float64) for x in xs]
    xhats = [f @ w + 0.1 * E[3] for w in W_dec]  # a decoder bias off the studied directions
    return latent_scaling(xs, xhats, f, W_dec, [0, 1], [1, 1])


def test_a_latent_the_other_model_lacks_has_both_ratios_near_zero():
    out = planted(other_has_direction=False, other_row_zero=True, decoupled=False)
    assert abs(float(out["nu_error"][0])) < 0.02 and abs(float(out["nu_reconstruction"][0])) < 0.02
    assert float(out["beta_error_owner"][0]) == pytest.approx(1.0, abs=0.02)
    assert float(out["nu_error"][1]) == pytest.approx(1.0, abs=0.02)  # the shared latent
    assert float(out["nu_reconstruction"][1]) == pytest.approx(1.0, abs=1e-12)


def test_complete_shrinkage_leaves_the_latent_in_the_other_models_error():
    out = planted(other_has_direction=True, other_row_zero=True, decoupled=False)
    assert float(out["nu_error"][0]) == pytest.approx(1.0, abs=0.02)
    assert abs(float(out["nu_reconstruction"][0])) < 1e-12


def test_latent_decoupling_reconstructs_the_latent_through_another():
    out = planted(other_has_direction=True, other_row_zero=True, decoupled=True)
    assert float(out["nu_reconstruction"][0]) == pytest.approx(1.0, abs=1e-12)
    assert abs(float(out["nu_error"][0])) < 0.02  # the other latent took what the error held


def test_a_latent_the_other_model_shares_has_ratios_near_one():
    out = planted(other_has_direction=True, other_row_zero=False, decoupled=False)
    assert float(out["nu_error"][0]) == pytest.approx(1.0, abs=0.02)
    assert float(out["nu_reconstruction"][0]) == pytest.approx(1.0, abs=1e-12)


# -- streaming ----------------------------------------------------------------------------------------------------


def rows_of(case, rows):
    xs, xhats, f, W_dec = case[:4]
    return [x[rows] for x in xs], [x[rows] for x in xhats], f[rows], W_dec


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**16), st.integers(2, 40), st.data())
def test_two_chunks_and_merged_shards_equal_one_call(seed, n, data):
    case = random_case(seed, n, 5, 3, 4)
    cut = data.draw(st.integers(0, n))
    expected = latent_scaling(*case)
    chunked = LatentScaling(case[4], case[5])
    first, second = LatentScaling(case[4], case[5]), LatentScaling(case[4], case[5])
    for metric, rows in ((chunked, slice(0, cut)), (chunked, slice(cut, n)), (first, slice(0, cut)),
                         (second, slice(cut, n))):
        metric.update(*rows_of(case, rows))
    states = merge_states(LatentScaling(case[4], case[5]), [first.metric_state, second.metric_state]).compute()
    for out in (chunked.compute(), first.merge(second).compute(), states):
        for key, value in expected.items():
            torch.testing.assert_close(out[key], value, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_float32_inputs_agree_with_float64():
    case = random_case(3, 200, 6, 8, 5)
    single = [[t.float() for t in case[0]], [t.float() for t in case[1]], case[2].float(),
              [w.float() for w in case[3]], case[4], case[5]]
    expected, got = latent_scaling(*case), latent_scaling(*single)
    for key in expected:
        assert got[key].dtype == torch.float64
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)


def test_a_crosscoders_parameter_list_is_accepted():
    case = random_case(1, 10, 3, 2, 2)
    W_dec = torch.nn.ParameterList([torch.nn.Parameter(w) for w in case[3]])
    out = latent_scaling(case[0], case[1], case[2], W_dec, case[4], case[5])
    torch.testing.assert_close(out["nu_error"], latent_scaling(*case)["nu_error"], equal_nan=True)


# -- the classification rule --------------------------------------------------------------------------------------


def test_thresholds_are_the_baseline_quantile_capped_by_the_ceiling():
    g = np.random.default_rng(0)
    base_error, base_reconstruction = g.uniform(0.2, 1.4, 50), g.uniform(0.6, 1.2, 50)
    base_error[3] = math.nan  # a baseline latent that never fired is left out
    verdict = classify_exclusive(torch.tensor([0.1, 0.3, 0.1, 0.25, math.nan, math.inf]),
                                 torch.tensor([0.1, 0.1, 0.55, 0.2, 0.1, 0.1]), torch.tensor(base_error),
                                 torch.tensor(base_reconstruction), ceiling=0.5, quantile=0.1)
    t_error = min(0.5, float(np.quantile(base_error[~np.isnan(base_error)], 0.1)))
    assert verdict.threshold_error == pytest.approx(t_error)
    assert verdict.threshold_reconstruction == 0.5  # the baseline's quantile lies above the ceiling
    expected = ["real" if e < t_error and r < 0.5 else "artifact" for e, r in [(0.1, 0.1), (0.3, 0.1), (0.1, 0.55),
                                                                              (0.25, 0.2)]]
    assert verdict.labels == [*expected, "never fires", "artifact"]
    assert verdict.as_dict()["labels"] == verdict.labels


def test_a_real_latent_needs_both_ratios_low():
    shared = np.linspace(0.7, 1.3, 20)
    verdict = classify_exclusive(np.array([0.0, 0.0, 0.9]), np.array([0.0, 0.9, 0.0]), shared, shared)
    assert verdict.labels == ["real", "artifact", "artifact"]


# -- bad input ----------------------------------------------------------------------------------------------------


def bad(case, **changes):
    args = dict(zip(("xs", "xhats", "f", "W_dec", "latents", "owners"), case, strict=True))
    args.update(changes)
    return lambda: latent_scaling(**args)


@pytest.mark.parametrize("name, change", [
    ("owners", lambda c: {"owners": [0, 2, 1]}),
    ("latents` and `owners", lambda c: {"owners": [0, 1]}),
    ("latents", lambda c: {"latents": [0, 1, 7]}),
    ("latents", lambda c: {"latents": [0, -1, 2]}),
    ("latents", lambda c: {"latents": torch.tensor([0.0, 1.0, 2.0])}),
    ("owners", lambda c: {"owners": []}),
    ("xs", lambda c: {"xs": [c[0][0], c[0][1][:, :2]]}),
    ("xs", lambda c: {"W_dec": [c[3][0], c[3][1][:, :2]]}),
    ("xs", lambda c: {"xs": c[0][0]}),
    ("xs", lambda c: {"xs": [c[0][0]]}),
    ("xs[1]` and `xhats[1]", lambda c: {"xs": [c[0][0], c[0][1][:5]]}),
    ("W_dec[0]", lambda c: {"W_dec": [c[3][0][:3], c[3][1]]}),
    ("f", lambda c: {"f": c[2][0]}),
    ("f", lambda c: {"f": c[2].masked_fill(c[2] > 1, math.nan)}),
    ("xhats[0]", lambda c: {"xhats": [c[1][0].long(), c[1][1]]}),
])
def test_bad_input_is_named_in_the_template(name, change):
    case = random_case(0, 12, 4, 3, 3)
    case = (*case[:4], [0, 1, 2], [0, 1, 1])
    with pytest.raises((ValueError, TypeError), match=TEMPLATE.format(name=re.escape(name))):
        bad(case, **change(case))()


def test_bad_classification_input_is_named():
    ratios = torch.tensor([0.1, 0.2])
    with pytest.raises(ValueError, match=TEMPLATE.format(name="quantile")):
        classify_exclusive(ratios, ratios, ratios, ratios, quantile=1.5)
    with pytest.raises(ValueError, match=TEMPLATE.format(name="nu_error")):
        classify_exclusive(ratios, ratios[:1], ratios, ratios)
    with pytest.raises(ValueError, match=TEMPLATE.format(name="baseline_nu_error")):
        classify_exclusive(ratios, ratios, torch.tensor([math.nan]), ratios)
    with pytest.raises(ValueError, match=TEMPLATE.format(name="ceiling")):
        classify_exclusive(ratios, ratios, ratios, ratios, ceiling=0.0)
    with pytest.raises(ValueError, match=TEMPLATE.format(name="d")):
        latent_betas(torch.ones(3, 2), torch.ones(3, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match=TEMPLATE.format(name="other")):
        LatentScaling([0], [1]).merge(LatentScaling([0], [0]))
