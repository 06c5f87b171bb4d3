"""Per-latent statistics: top-k against a brute-force sort of the whole matrix (any chunking, any order, ties), merge
of shards equal to one pass, group shares against a direct sum, contexts at the text's edges, bad input."""

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlens.measures.latent_statistics import LatentStatistics, contexts, group_shares
from kdlens.measures.merging import merge_states

TEMPLATE = r"Expected `{name}`( and `[^`]+`)? to \w+ .+, but got .+"


def brute_force(f: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Every statistic from the whole (N, L) matrix: each latent's firing rows sorted by (-value, row)."""
    n, n_latents = f.shape
    top_values, top_rows = np.full((n_latents, k), np.nan), np.full((n_latents, k), -1)
    for j in range(n_latents):
        firing = sorted((-f[i, j], i) for i in range(n) if f[i, j] > 0)[:k]
        top_values[j, :len(firing)] = [-v for v, _ in firing]
        top_rows[j, :len(firing)] = [i for _, i in firing]
    fires = (f > 0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(f > 0, f, 0).sum(0) / fires
        frequency = fires / n
    return {"fires": fires, "mean_when_firing": mean, "frequency": frequency,
            "max": f.max(0) if n else np.full(n_latents, -np.inf), "top_values": top_values, "top_rows": top_rows}


def assert_equal(out: dict, expected: dict, n_latents: int, k: int) -> None:
    assert set(out) == set(expected)
    for key, value in expected.items():
        got = out[key].reshape(value.shape).numpy()  # torchmetrics squeezes one-element results
        np.testing.assert_allclose(got, value, rtol=1e-12, equal_nan=True, err_msg=key)
    assert out["fires"].dtype == out["top_rows"].dtype == torch.int64
    assert out["top_values"].dtype == out["mean_when_firing"].dtype == torch.float64


@st.composite
def matrices_and_chunks(draw):
    """A small (N, L) activation matrix with many ties (values in {0, 1, 2, 3}, half of them 0), k, and chunks."""
    n, n_latents, k = draw(st.integers(0, 40)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    values = np.random.default_rng(seed).choice([0.0, 0.0, 0.0, 1.0, 2.0, 3.0], size=(n, n_latents))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=5)))
    bounds = [0, *cuts, n]
    chunks = [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    order = draw(st.permutations(range(len(chunks))))
    return values, k, [chunks[i] for i in order]


@settings(max_examples=80, deadline=None)
@given(matrices_and_chunks())
def test_statistics_match_a_brute_force_sort_for_any_chunking_and_order(case):
    values, k, chunks = case
    stats = LatentStatistics(values.shape[1], k=k)
    for start, stop in chunks:
        stats.update(torch.from_numpy(values[start:stop]).float(), row_offset=start)
    assert_equal(stats.compute(), brute_force(values, k), values.shape[1], k)


@settings(max_examples=40, deadline=None)
@given(matrices_and_chunks(), st.data())
def test_merging_two_halves_equals_one_pass(case, data):
    values, k, _ = case
    n, n_latents = values.shape
    cut = data.draw(st.integers(0, n))
    whole = LatentStatistics(n_latents, k=k)
    whole.update(torch.from_numpy(values), row_offset=0)
    halves = []
    for rows in (slice(0, cut), slice(cut, n)):
        half = LatentStatistics(n_latents, k=k)
        half.update(torch.from_numpy(values[rows]), row_offset=rows.start)
        halves.append(half)
    expected = whole.compute()
    by_states = merge_states(LatentStatistics(n_latents, k=k), [h.metric_state for h in reversed(halves)])
    for merged in (halves[1].merge(halves[0]), by_states):
        for key, value in merged.compute().items():
            torch.testing.assert_close(value, expected[key], equal_nan=True, msg=key)


def test_a_latent_that_never_fires():
    stats = LatentStatistics(3, k=2)
    stats.update(torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 5.0]]), row_offset=10)
    out = stats.compute()
    assert out["fires"].tolist() == [0, 2, 1]
    assert math.isnan(out["mean_when_firing"][0]) and out["frequency"].tolist() == [0.0, 1.0, 0.5]
    assert out["top_rows"].tolist() == [[-1, -1], [11, 10], [11, -1]]
    assert out["top_values"][2, 0] == 5.0 and math.isnan(out["top_values"][2, 1])


# -- group shares -------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 30), st.integers(1, 4), st.integers(1, 5))
def test_group_shares_match_a_direct_sum(seed, n, k, n_groups):
    g = np.random.default_rng(seed)
    f = np.maximum(g.normal(size=(n, k)), 0)
    groups = g.integers(0, n_groups, n)
    expected = np.full((k, n_groups), np.nan)
    for j in range(k):
        total = sum(f[i, j] for i in range(n))
        if total > 0:
            expected[j] = [sum(f[i, j] for i in range(n) if groups[i] == c) / total for c in range(n_groups)]
    shares = group_shares(torch.from_numpy(f), torch.from_numpy(groups), n_groups)
    assert shares.shape == (k, n_groups) and shares.dtype == torch.float64
    np.testing.assert_allclose(shares.numpy(), expected, rtol=1e-12, equal_nan=True)
    fired = ~np.isnan(expected[:, 0])
    np.testing.assert_allclose(shares.numpy()[fired].sum(1), 1.0, rtol=1e-12)
    one = group_shares(torch.from_numpy(f[:, 0]), torch.from_numpy(groups), n_groups)
    assert one.shape == (n_groups,)
    np.testing.assert_allclose(one.numpy(), expected[0], rtol=1e-12, equal_nan=True)


def test_a_latent_that_never_fires_has_a_nan_row():
    shares = group_shares(torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 2]), 3)
    assert torch.isnan(shares[0]).all() and shares[1].tolist() == [0.5, 0.0, 0.5]


# -- contexts -----------------------------------------------------------------------------------------------------


def test_contexts_cut_at_the_texts_ends_and_keep_newlines():
    text = "first line\nsecond"
    assert contexts(text, (0, 5), window=3) == {"before": "", "token": "first", "after": " li"}
    assert contexts(text, (11, 17), window=100) == {"before": "first line\n", "token": "second", "after": ""}
    assert contexts(text, (6, 10), window=2) == {"before": "t ", "token": "line", "after": "\ns"}
    assert contexts(text, (10, 11), window=0) == {"before": "", "token": "\n", "after": ""}
    assert contexts(text, (17, 17)) == {"before": text, "token": "", "after": ""}
    assert contexts("", (0, 0)) == {"before": "", "token": "", "after": ""}


def test_contexts_window_counts_characters():
    text = "abcdefghij"
    for start in range(11):
        for end in range(start, 11):
            out = contexts(text, (start, end), window=3)
            assert out["before"] + out["token"] + out["after"] == text[max(0, start - 3):end + 3]
            assert len(out["before"]) == min(3, start) and len(out["after"]) == min(3, 10 - end)


# -- bad input ----------------------------------------------------------------------------------------------------


def named(name):
    return pytest.raises((ValueError, TypeError), match=TEMPLATE.format(name=re.escape(name)))


def test_bad_input_is_named_in_the_template():
    stats = LatentStatistics(3, k=2)
    with named("n_latents"):
        LatentStatistics(0)
    with named("k"):
        LatentStatistics(3, k=0)
    with named("f"):
        stats.update(torch.ones(4, 2), row_offset=0)
    with named("f"):
        stats.update(torch.ones(4), row_offset=0)
    with named("f"):
        stats.update(torch.full((2, 3), math.nan), row_offset=0)
    with named("row_offset"):
        stats.update(torch.ones(2, 3), row_offset=-1)
    with named("other"):
        stats.merge(LatentStatistics(3, k=3))
    with named("f"):
        group_shares(torch.tensor([-1.0, 1.0]), torch.tensor([0, 1]), 2)
    with named("groups"):
        group_shares(torch.tensor([1.0, 1.0]), torch.tensor([0, 2]), 2)
    with named("groups"):
        group_shares(torch.tensor([1.0, 1.0]), torch.tensor([0]), 2)
    with named("n_groups"):
        group_shares(torch.tensor([1.0, 1.0]), torch.tensor([0, 0]), 0)
    with named("span"):
        contexts("abc", (2, 1))
    with named("span"):
        contexts("abc", (0, 4))
    with named("span"):
        contexts("abc", 1)
    with named("window"):
        contexts("abc", (0, 1), window=-1)
    with named("text"):
        contexts(b"abc", (0, 1))
