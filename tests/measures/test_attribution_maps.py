"""Attribution maps: rank, top-k and cosine agreement against scipy / numpy, alignment, evidence scores, intervals."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from kdlens import measures as M
from kdlens.measures import attribution_maps


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def scipy_spearman(a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConstantInputWarning: scipy returns NaN too
        return np.array([stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)])


# -- Spearman ---------------------------------------------------------------------------------------------------------

def test_spearman_matches_scipy_on_relu_maps_with_many_zeros():
    a, b = randn(6, 9, 9).relu(), randn(6, 9, 9, seed=1).relu()  # about half of each map is exactly 0
    b[0] = a[0] * 2  # identical ranking, ties included
    got = M.map_spearman(a, b, reduction="none")
    np.testing.assert_allclose(got.numpy(), scipy_spearman(a.numpy(), b.numpy()), rtol=0, atol=1e-12)
    assert got.dtype == torch.float64 and float(got[0]) == pytest.approx(1.0, abs=1e-12)


integer_maps = st.integers(1, 3).flatmap(lambda n: st.tuples(st.integers(1, 5), st.integers(1, 5)).flatmap(
    lambda hw: st.tuples(*[st.lists(st.integers(0, 3), min_size=n * hw[0] * hw[1], max_size=n * hw[0] * hw[1])
                           .map(lambda v, hw=hw: np.array(v, dtype=np.float64).reshape(n, *hw)) for _ in range(2)])))


@settings(max_examples=80, deadline=None)
@given(integer_maps)
def test_spearman_matches_scipy_with_heavy_ties(pair):
    a, b = pair
    got = M.map_spearman(a, b, reduction="none").numpy()
    np.testing.assert_allclose(got, scipy_spearman(a, b), rtol=0, atol=1e-12, equal_nan=True)


def test_spearman_is_invariant_to_increasing_transforms():
    a, b = randn(4, 8, 8), randn(4, 8, 8, seed=1)
    base = M.map_spearman(a, b, reduction="none")
    torch.testing.assert_close(M.map_spearman(a.exp(), 3 * b**3 + 1, reduction="none"), base, rtol=0, atol=1e-12)
    torch.testing.assert_close(M.map_spearman(a, -b, reduction="none"), -base, rtol=0, atol=1e-12)


def test_constant_map_is_nan_and_mean_skips_it():
    a, b = randn(3, 4, 4), randn(3, 4, 4, seed=1)
    a[1] = 0.5
    per = M.map_spearman(a, b, reduction="none")
    assert math.isnan(per[1]) and not per[[0, 2]].isnan().any()
    assert M.map_spearman(a, b) == pytest.approx(float(per[[0, 2]].mean()))
    assert math.isnan(M.map_spearman(torch.zeros(2, 3, 3), b[:2]))  # every example undefined -> NaN


def test_chunked_ranking_equals_one_pass(monkeypatch):
    a, b = randn(7, 6, 6).relu(), randn(7, 6, 6, seed=1).relu()
    spearman, iou = M.map_spearman(a, b, reduction="none"), M.map_topk_iou(a, b, k=0.3, reduction="none")
    monkeypatch.setattr(attribution_maps, "_CHUNK_ELEMENTS", 80)  # two rows of 36 positions per chunk
    torch.testing.assert_close(M.map_spearman(a, b, reduction="none"), spearman, rtol=0, atol=0)
    torch.testing.assert_close(M.map_topk_iou(a, b, k=0.3, reduction="none"), iou, rtol=0, atol=0)


# -- top-k IoU --------------------------------------------------------------------------------------------------------

def reference_iou(a, b, k):
    """Plain numpy: the ceil(k N) largest positions, ties to the lower index (lexsort on value, then position)."""
    out = []
    for x, y in zip(a.reshape(len(a), -1), b.reshape(len(b), -1), strict=True):
        m = max(1, math.ceil(round(k * x.size, 9)))
        pos = np.arange(x.size)
        top_x = set(np.lexsort((pos, -x))[:m].tolist())
        top_y = set(np.lexsort((pos, -y))[:m].tolist())
        out.append(len(top_x & top_y) / len(top_x | top_y))
    return np.array(out)


def test_topk_iou_hand_examples():
    a = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    assert M.map_topk_iou(a, torch.tensor([[[4.0, 1.0], [3.0, 2.0]]]), k=0.5) == pytest.approx(1 / 3)
    assert M.map_topk_iou(a, torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]), k=0.5) == 0.0  # {0, 1} vs {3, 2}
    assert M.map_topk_iou(a, torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]), k=0.25) == 0.0
    # ties to the lower position: one peak, then zeros; top-2 is {peak, position 0}
    peak = torch.tensor([[[0.0, 0.0], [0.0, 5.0]]])
    first = torch.tensor([[[1.0, 0.0], [0.0, 5.0]]])
    assert M.map_topk_iou(peak, first, k=0.5) == 1.0
    second = torch.tensor([[[0.0, 1.0], [0.0, 5.0]]])
    assert M.map_topk_iou(peak, second, k=0.5) == pytest.approx(1 / 3)


def test_topk_counts_ceil_without_float_roundup():
    a = torch.arange(9.0, -1.0, -1.0).view(1, 1, 10)  # top-m = the first m positions
    b = torch.tensor([[[9.0, 8, 7, 0, 5, 4, 3, 2, 1, 6]]])  # same top 3, different 4th
    assert 0.1 * 3 * 10 > 3  # 0.30000000000000004 * 10: a naive ceil would keep 4 positions
    assert M.map_topk_iou(a, b, k=0.1 * 3) == 1.0
    assert M.map_topk_iou(a, b, k=0.31) == pytest.approx(3 / 5)  # ceil(3.1) = 4


@settings(max_examples=40, deadline=None)
@given(integer_maps, st.sampled_from([0.05, 0.2, 0.3, 0.5, 0.7, 1.0]))
def test_topk_iou_matches_reference_with_ties(pair, k):
    a, b = pair
    got = M.map_topk_iou(a, b, k=k, reduction="none").numpy()
    np.testing.assert_allclose(got, reference_iou(a, b, k), rtol=0, atol=1e-12)
    assert ((got >= 0) & (got <= 1)).all()


def test_topk_iou_of_everything_or_of_itself_is_one():
    a, b = randn(3, 5, 5), randn(3, 5, 5, seed=1)
    assert M.map_topk_iou(a, b, k=1.0) == 1.0
    assert M.map_topk_iou(a, a * 7.0, k=0.1) == 1.0


# -- cosine -----------------------------------------------------------------------------------------------------------

def test_cosine_matches_numpy_and_zero_map_is_nan():
    a, b = randn(4, 6, 5), randn(4, 6, 5, seed=1)
    a[2] = 0.0
    x, y = a.numpy().reshape(4, -1), b.numpy().reshape(4, -1)
    with np.errstate(invalid="ignore"):
        expected = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    got = M.map_cosine(a, b, reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12, equal_nan=True)
    assert math.isnan(got[2])
    assert M.map_cosine(a, b) == pytest.approx(float(np.nanmean(expected)))
    assert M.map_cosine(a.abs(), 3.0 * b.abs(), reduction="none")[[0, 1, 3]].ge(0).all()


def test_comparisons_are_invariant_to_positive_scaling():
    a, b = randn(3, 6, 6).relu(), randn(3, 6, 6, seed=1).relu()
    for fn in (M.map_spearman, M.map_topk_iou, M.map_cosine):
        torch.testing.assert_close(fn(a * 100.0, b * 1e-3, reduction="none"), fn(a, b, reduction="none"))


# -- alignment and normalisation --------------------------------------------------------------------------------------

def test_align_maps_shapes_and_size():
    a, b = M.align_maps(torch.rand(2, 7, 7), torch.rand(2, 14, 14))
    assert a.shape == b.shape == (2, 14, 14)
    a, b = M.align_maps(torch.rand(2, 7, 14), torch.rand(2, 14, 7))  # axis by axis: neither is pooled
    assert a.shape == b.shape == (2, 14, 14)
    fine = np.random.default_rng(0).random((2, 28, 28), dtype=np.float32)
    a, b = M.align_maps(torch.rand(2, 7, 7), fine, size=(10, 12))  # forced: the fine map is downsampled
    assert a.shape == b.shape == (2, 10, 12) and b.dtype == torch.float32


def test_align_is_identity_for_a_map_with_itself_and_upsamples_like_interpolate():
    x = randn(3, 5, 6)
    a, b = M.align_maps(x, x)
    assert torch.equal(a, x) and torch.equal(b, x)
    coarse, fine = randn(3, 7, 7), randn(3, 28, 28, seed=1)
    up, same = M.align_maps(coarse, fine)
    torch.testing.assert_close(up, F.interpolate(coarse[:, None], size=(28, 28), mode="bilinear")[:, 0])
    assert torch.equal(same, fine)
    flat, _ = M.align_maps(torch.full((1, 2, 2), 3.0), fine[:1])  # a constant stays constant
    torch.testing.assert_close(flat, torch.full((1, 28, 28), 3.0))
    half, _ = M.align_maps(coarse.half(), fine)
    assert half.dtype == torch.float16


def test_comparisons_align_different_resolutions():
    coarse, fine = randn(3, 7, 7).relu(), randn(3, 14, 14, seed=1).relu()
    up, _ = M.align_maps(coarse, fine)
    for fn in (M.map_spearman, M.map_topk_iou, M.map_cosine):
        torch.testing.assert_close(fn(coarse, fine, reduction="none"), fn(up, fine, reduction="none"))
        torch.testing.assert_close(fn(fine, coarse, reduction="none"), fn(fine, up, reduction="none"))


def test_normalize_maps():
    x = randn(4, 5, 5)
    x[1] = 2.0  # constant
    x[2] = -x[2].abs()  # no positive part
    x[3] = 0.0
    minmax = M.normalize_maps(x)
    assert minmax[0].min() == 0 and minmax[0].max() == 1 and (minmax[[1, 3]] == 0).all() and minmax[2].max() == 1
    total = M.normalize_maps(x, "sum")
    assert total[0].sum() == pytest.approx(1.0) and (total >= 0).all() and (total[2:] == 0).all()
    torch.testing.assert_close(total[1], torch.full((5, 5), 1 / 25, dtype=torch.float64))
    unit = M.normalize_maps(x, "l2")
    assert unit[0].norm() == pytest.approx(1.0) and (unit[3] == 0).all()
    scaled = M.normalize_maps(x, "abs")
    assert scaled[:3].flatten(1).amax(1).tolist() == [1.0, 1.0, 1.0] and (scaled[3] == 0).all()
    assert M.normalize_maps(x.float()).dtype == torch.float32


# -- evidence ---------------------------------------------------------------------------------------------------------

def square_masks():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True  # 16 of 64 pixels
    return masks


def test_evidence_mass_hand_examples():
    masks = square_masks()
    inside = torch.zeros(2, 8, 8)
    inside[0, 3, 3], inside[1, 2:6, 2:6] = 5.0, 1.0
    assert M.evidence_mass(inside, masks, reduction="none").tolist() == [1.0, 1.0]
    uniform = torch.ones(2, 8, 8)
    assert M.evidence_mass(uniform, masks) == M.mask_fraction(masks) == 0.25
    assert M.evidence_mass(torch.ones(2, 1, 1), masks) == 0.25  # a 1x1 map upsamples to uniform
    signed = uniform.clone()
    signed[:, 0, :] = -100.0  # negative attribution is ignored, not subtracted
    assert M.evidence_mass(signed, masks) == pytest.approx(16 / 56)
    assert M.mask_fraction(masks.int(), reduction="none").tolist() == [0.25, 0.25]


def test_evidence_mass_resizes_coarse_maps_to_the_mask():
    coarse = randn(2, 4, 4).relu() + 0.1
    up = F.interpolate(coarse[:, None], size=(8, 8), mode="bilinear")[:, 0]
    expected = (up * square_masks()).flatten(1).sum(1) / up.flatten(1).sum(1)
    torch.testing.assert_close(M.evidence_mass(coarse, square_masks(), reduction="none"), expected)
    torch.testing.assert_close(M.evidence_mass(coarse.numpy(), square_masks().numpy(), reduction="none"), expected)


def test_evidence_mass_without_positive_mass_is_nan():
    maps = torch.ones(2, 8, 8)
    maps[1] = -1.0
    per = M.evidence_mass(maps, square_masks(), reduction="none")
    assert per[0] == 0.25 and math.isnan(per[1])
    assert M.evidence_mass(maps, square_masks()) == 0.25


def test_pointing_game_hits_misses_and_ties():
    masks = square_masks()
    maps = torch.zeros(2, 8, 8)
    maps[0, 4, 4] = 1.0  # inside
    maps[1, 0, 0] = 1.0  # outside
    assert M.pointing_game(maps, masks, reduction="none").tolist() == [1.0, 0.0]
    assert M.pointing_game(maps, masks) == 0.5
    tied = torch.zeros(1, 8, 8)
    tied[0, 0, 0] = tied[0, 3, 3] = 2.0  # two maxima, one inside: a hit
    assert M.pointing_game(tied, masks[:1]) == 1.0


def test_pointing_game_tolerance_is_euclidean_pixels():
    masks = square_masks()[:1]  # rows and columns 2..5
    straight = torch.zeros(1, 8, 8)
    straight[0, 3, 7] = 1.0  # 2 px right of the mask
    assert [M.pointing_game(straight, masks, tolerance=t) for t in (0, 1, 2)] == [0.0, 0.0, 1.0]
    diagonal = torch.zeros(1, 8, 8)
    diagonal[0, 7, 7] = 1.0  # (2, 2) from the corner (5, 5): distance 2.83
    assert [M.pointing_game(diagonal, masks, tolerance=t) for t in (2, 3)] == [0.0, 1.0]


def test_pointing_game_matches_brute_force_disc_dilation():
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        h, w, radius = (int(v) for v in torch.randint(1, 12, (3,), generator=g))
        radius %= 6
        maps = torch.randint(0, 3, (3, h, w), generator=g).double()  # ties at the maximum are common
        masks = torch.rand(3, h, w, generator=g) < 0.1
        offsets = torch.arange(-radius, radius + 1.0)
        disc = (offsets[:, None] ** 2 + offsets[None] ** 2 <= radius**2).double()
        dilated = F.conv2d(masks[:, None].double(), disc[None, None], padding=radius)[:, 0] > 0.5
        high, low = maps.flatten(1).amax(1), maps.flatten(1).amin(1)
        expected = ((maps == high[:, None, None]) & dilated).flatten(1).any(1).double()
        expected = torch.where(high > low, expected, math.nan)
        got = M.pointing_game(maps, masks, tolerance=radius, reduction="none")
        torch.testing.assert_close(got, expected, equal_nan=True)


def test_pointing_game_constant_map_is_nan_and_coarse_maps_are_resized():
    maps = torch.stack([torch.zeros(8, 8), torch.full((8, 8), 3.0)])
    assert M.pointing_game(maps, square_masks(), reduction="none").isnan().all()
    assert math.isnan(M.pointing_game(maps, square_masks()))
    coarse = torch.zeros(1, 2, 2)
    coarse[0, 1, 1] = 1.0  # peak in the bottom-right cell: upsampled, the peak is at (6..7, 6..7), outside
    assert M.pointing_game(coarse, square_masks()[:1]) == 0.0
    assert M.pointing_game(coarse, square_masks()[:1], tolerance=2) == 1.0


# -- intervals --------------------------------------------------------------------------------------------------------

def test_bootstrap_mean_interval_covers_the_mean_and_is_seeded():
    values = randn(200).sigmoid()
    ci = M.bootstrap_mean_interval(values, n_resamples=500)
    assert ci.estimate == pytest.approx(float(values.mean())) and ci.low < ci.estimate < ci.high
    assert ci.level == 0.95 and ci.high - ci.low < 0.1
    assert M.bootstrap_mean_interval(values, n_resamples=500) == ci
    assert M.bootstrap_mean_interval(values, n_resamples=500, seed=1) != ci
    narrow = M.bootstrap_mean_interval(values.numpy(), n_resamples=500, level=0.5)
    assert ci.low < narrow.low < narrow.high < ci.high


def test_bootstrap_drops_nans():
    values = randn(50).sigmoid()
    with_nans = torch.cat([values, torch.full((5,), math.nan)])
    assert M.bootstrap_mean_interval(with_nans, n_resamples=200) == M.bootstrap_mean_interval(values, n_resamples=200)


def test_bootstrap_mean_difference_is_paired():
    a, b = randn(100).sigmoid(), randn(100, seed=1).sigmoid()
    zero = M.bootstrap_mean_difference(a, a, n_resamples=200)
    assert (zero.estimate, zero.low, zero.high) == (0.0, 0.0, 0.0)
    diff = M.bootstrap_mean_difference(a, b, n_resamples=200)
    assert diff == M.bootstrap_mean_interval(a - b, n_resamples=200)
    a_nan, b_nan = a.clone(), b.clone()
    a_nan[0], b_nan[1] = math.nan, math.nan  # both pairs dropped
    assert M.bootstrap_mean_difference(a_nan, b_nan, n_resamples=200) == M.bootstrap_mean_difference(
        a[2:], b[2:], n_resamples=200)
    shifted = M.bootstrap_mean_difference(a + 0.5, a, n_resamples=200)  # a constant gap: no resampling noise
    assert shifted.estimate == pytest.approx(0.5) and shifted.low == pytest.approx(0.5)
