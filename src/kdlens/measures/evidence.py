"""Does a map point at the evidence? Scores of attribution maps against ground-truth evidence masks.

A task that knows where its evidence is (the shape that decides the label, the object's box) gives one boolean
mask per example. :func:`evidence_mass` asks what share of a map's positive mass falls inside it, with
:func:`mask_fraction` as the chance level; :func:`pointing_game` asks whether the map's peak does. Maps are
resized to the mask's resolution first (bilinear, ``align_corners=False``), as GradCAM maps are upsampled to the
input. Per-example scores go to :func:`bootstrap_mean_interval` and :func:`bootstrap_mean_difference`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdlens import validation as C
from kdlens.measures.attribution_maps import REDUCTIONS, check_maps, reduce_scores, resize
from kdlens.measures.resampling import Interval, bootstrap_indices, percentile_interval

_CHUNK_ELEMENTS = 4_000_000  # resample indices held at once


def _check_masks(x, name: str = "masks", n: int | None = None) -> torch.Tensor:
    """(n, H, W) bool masks; integer or float masks holding only 0 and 1 are accepted and converted."""
    t = C.as_tensor(x, name)
    if t.ndim != 3:
        fix = f"Squeeze the channel axis: {name}.squeeze(1)." if t.ndim == 4 and t.shape[1] == 1 else (
            f"For a single (H, W) mask add the batch axis with {name}[None]." if t.ndim == 2 else "")
        C.fail(name, "3-D of shape (n, H, W)", f"shape {tuple(t.shape)}", fix)
    if t.numel() == 0:
        C.fail(name, "non-empty (n, H, W >= 1)", f"shape {tuple(t.shape)}")
    if n is not None and t.shape[0] != n:
        C.fail(name, f"one mask per map ({n})", f"{t.shape[0]} masks",
               "Maps and masks must cover the same examples in the same order.")
    if t.dtype != torch.bool:
        if t.is_complex() or not bool(((t == 0) | (t == 1)).all()):
            finite = t[torch.isfinite(t)] if t.is_floating_point() else t
            got = (f"dtype {t.dtype} with values in [{float(finite.min()):.4g}, {float(finite.max()):.4g}]"
                   if finite.numel() and not t.is_complex() else f"dtype {t.dtype}")
            C.fail(name, "a boolean mask (or 0/1 values)", got, f"Threshold soft masks first, e.g. {name} > 0.5.")
        t = t != 0
    return t


def _maps_and_masks(maps, masks) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated maps resized to the masks' grid (float64) and bool masks on the maps' device."""
    m = check_maps(maps, "maps")
    k = _check_masks(masks, "masks", m.shape[0]).to(m.device)
    return resize(m.double(), tuple(k.shape[1:])), k


def mask_fraction(masks, reduction: str = "mean"):
    """Share of each mask's pixels that are evidence, in [0, 1]: the chance level of :func:`evidence_mass`.

    A map that spreads its mass uniformly puts exactly this share inside the mask, so ``evidence_mass /
    mask_fraction`` (per example, ``reduction="none"``) reads as "times better than chance".

    Parameters
    ----------
    masks : (n, H, W) bool tensor or array (0/1 integers or floats accepted)
    reduction : "mean" | "none"
        "mean" returns a float; "none" a (n,) float64 tensor.

    Examples
    --------
    >>> import torch
    >>> mask_fraction(torch.tensor([[[True, False], [False, False]]]))
    0.25
    """
    C.check_choice(reduction, "reduction", REDUCTIONS)
    k = _check_masks(masks)
    return reduce_scores(k.flatten(1).double().mean(1), reduction)


def evidence_mass(maps, masks, reduction: str = "mean"):
    """Share of a map's positive attribution mass inside the evidence mask, in [0, 1].

    ``sum(relu(map) * mask) / sum(relu(map))``, after resizing the map to the mask's resolution (bilinear,
    ``align_corners=False``; antialiased if the map is the finer one). Negative attribution is ignored. A map with
    no positive value has no mass to place: that example scores NaN and ``reduction="mean"`` averages the others
    (``nanmean``). Chance is the mask's area fraction, :func:`mask_fraction`; an empty mask scores 0, so select
    examples that have evidence first.

    Parameters
    ----------
    maps : (n, h, w) float tensor or array, unnormalised (the score is invariant to positive scaling)
    masks : (n, H, W) bool tensor or array
    reduction : "mean" | "none"
        "mean" returns a float; "none" a (n,) float64 tensor.

    Examples
    --------
    >>> import torch
    >>> maps = torch.tensor([[[3.0, 1.0], [0.0, -2.0]]])
    >>> evidence_mass(maps, torch.tensor([[[True, False], [False, True]]]))
    0.75
    """
    C.check_choice(reduction, "reduction", REDUCTIONS)
    m, k = _maps_and_masks(maps, masks)
    positive = m.clamp_min(0.0).flatten(1)  # (n, H*W)
    total = positive.sum(1)
    inside = (positive * k.flatten(1)).sum(1)
    mass = torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), math.nan)
    return reduce_scores(mass.clamp(0.0, 1.0), reduction)


def _check_tolerance(tolerance) -> int:
    return C.check_int(tolerance, "tolerance", 0, "It counts pixels; Zhang et al. (2016) use 15 at 224x224.")


def _near_mask(masks: torch.Tensor, points: torch.Tensor, radius: int) -> torch.Tensor:
    """For (T, 3) points (example, row, col): is a mask pixel within Euclidean distance ``radius``? (T,) bool.

    The disc around a point is a stack of 2r+1 row segments; each segment's mask count is a difference of row-wise
    prefix sums, so a point costs O(r), not O(r^2), and only the maximal positions are looked at.
    """
    _, height, width = masks.shape
    prefix = F.pad(masks.cumsum(2, dtype=torch.int32), (1, 0))  # (n, H, W + 1): mask pixels in columns < j
    dy = torch.arange(-radius, radius + 1, device=masks.device)  # (2r+1,)
    half = torch.tensor([math.isqrt(radius**2 - d * d) for d in range(-radius, radius + 1)], device=masks.device)
    near = []
    for chunk in points.split(max(1, _CHUNK_ELEMENTS // (2 * radius + 1))):
        e, y, x = chunk[:, :1], chunk[:, 1:2], chunk[:, 2:]  # (t, 1) each
        rows = y + dy  # (t, 2r+1)
        lo, hi = (x - half).clamp(0, width), (x + half + 1).clamp(0, width)
        rows_in = rows.clamp(0, height - 1)
        count = prefix[e, rows_in, hi] - prefix[e, rows_in, lo]
        near.append(((count > 0) & (rows >= 0) & (rows < height)).any(1))
    return torch.cat(near)


def pointing_game(maps, masks, tolerance: int = 0, reduction: str = "mean"):
    """Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016): does the
    map's maximum fall on the evidence?

    The map is resized to the mask's resolution (bilinear, ``align_corners=False``); the example scores 1.0 if a
    position holding the map's maximum lies within ``tolerance`` pixels (Euclidean) of the mask, else 0.0. Zhang
    et al. allow 15 pixels at 224x224 input, which forgives a peak just off a small object's edge. When several
    positions tie at the maximum it is a hit if any of them is inside. A constant map (every position maximal,
    including the all-zero map) points nowhere: that example scores NaN and ``reduction="mean"`` averages the
    others (``nanmean``). An empty mask is always a miss.

    Parameters
    ----------
    maps : (n, h, w) float tensor or array
    masks : (n, H, W) bool tensor or array
    tolerance : int >= 0, pixels at the mask's resolution
    reduction : "mean" | "none"
        "mean" returns the hit rate as a float; "none" a (n,) float64 tensor of 1.0 / 0.0 / NaN.

    Examples
    --------
    >>> import torch
    >>> maps = torch.tensor([[[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]]])
    >>> masks = torch.tensor([[[False, False, True]], [[False, False, True]]])
    >>> pointing_game(maps, masks, reduction="none")
    tensor([1., 0.], dtype=torch.float64)
    """
    C.check_choice(reduction, "reduction", REDUCTIONS)
    tolerance = _check_tolerance(tolerance)
    m, k = _maps_and_masks(maps, masks)
    high, low = m.flatten(1).amax(1), m.flatten(1).amin(1)  # (n,)
    points = (m == high[:, None, None]).nonzero()  # (T, 3): every maximal position (example, row, col)
    hit = torch.zeros(m.shape[0], dtype=torch.float64, device=m.device)
    hit[points[_near_mask(k, points, tolerance), 0]] = 1.0  # a hit if any maximal position is near the mask
    return reduce_scores(torch.where(high > low, hit, math.nan), reduction)


def _check_values(x, name: str) -> torch.Tensor:
    """(n,) float per-example values; NaN allowed (it marks an undefined score), inf not."""
    t = C.as_float(x, name)
    if t.ndim != 1:
        C.fail(name, "1-D of shape (n,)", f"shape {tuple(t.shape)}",
               f"Pass per-example scores (reduction='none'); flatten a (n, 1) column with {name}.view(-1).")
    if bool(torch.isinf(t).any()):
        C.fail(name, "finite or NaN", f"{int(torch.isinf(t).sum())} infinite values",
               "NaN marks an undefined per-example score; inf is a bug upstream.")
    return t.detach().cpu().double()


def _mean_interval(values: torch.Tensor, name: str, n_resamples: int, level: float, seed: int) -> Interval:
    kept = values[~torch.isnan(values)]
    n = kept.shape[0]
    if n < 2:
        C.fail(name, "at least 2 non-NaN values for a bootstrap interval", f"{n} of {values.shape[0]}",
               "NaN marks an undefined per-example score (e.g. a constant map); check why so few are defined.")
    reps = [kept[idx].mean(1) for idx in bootstrap_indices(n, n_resamples, seed, max(1, _CHUNK_ELEMENTS // n))]
    return percentile_interval(float(kept.mean()), torch.cat(reps), level)


def bootstrap_mean_interval(values, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile-bootstrap interval of the mean of per-example values (e.g. ``map_spearman(..., "none")``).

    NaN values (examples whose score is undefined) are dropped first; the estimate and the interval are over the
    remaining ``int((~values.isnan()).sum())`` examples, which callers should report beside the interval.

    Parameters
    ----------
    values : (n,) float tensor or array; NaN allowed, inf not; at least 2 non-NaN values
    n_resamples : int, bootstrap resamples of the examples (with replacement)
    level : float in (0, 1), e.g. 0.95
    seed : int, makes the interval reproducible

    Returns
    -------
    Interval(estimate, low, high, level); ``estimate`` is the mean of the non-NaN values (float64).

    Examples
    --------
    >>> import torch
    >>> ci = bootstrap_mean_interval(torch.tensor([0.2, 0.4, float("nan"), 0.6]), n_resamples=200)
    >>> round(ci.estimate, 6), ci.low <= ci.estimate <= ci.high
    (0.4, True)
    """
    level, n_resamples = C.check_level(level), C.check_resamples(n_resamples)
    return _mean_interval(_check_values(values, "values"), "values", n_resamples, level, int(seed))


def bootstrap_mean_difference(values_a, values_b, n_resamples: int = 1000, level: float = 0.95,
                              seed: int = 0) -> Interval:
    """Paired-bootstrap interval of ``mean(values_a - values_b)`` over the same examples.

    For paired per-example scores, e.g. the student's and a baseline's evidence mass on the same images: each
    resample draws the same examples for both, so the interval reflects the difference, not the noise of two
    independent samples. Pairs where either value is NaN are dropped (the count kept is
    ``int((~(values_a.isnan() | values_b.isnan())).sum())``).

    Parameters
    ----------
    values_a, values_b : (n,) float tensors or arrays, the same n; NaN allowed, inf not
    n_resamples, level, seed : as in :func:`bootstrap_mean_interval`

    Returns
    -------
    Interval(estimate, low, high, level) of a minus b; an interval excluding 0 says the gap exceeds resampling
    noise.

    Examples
    --------
    >>> import torch
    >>> v = torch.tensor([0.1, 0.5, 0.9, 0.3])
    >>> bootstrap_mean_difference(v, v, n_resamples=50)
    Interval(estimate=0.0, low=0.0, high=0.0, level=0.95)
    """
    level, n_resamples = C.check_level(level), C.check_resamples(n_resamples)
    a, b = _check_values(values_a, "values_a"), _check_values(values_b, "values_b")
    C.check_same_length(a, b, "values_a", "values_b")
    return _mean_interval(a - b, "values_a", n_resamples, level, int(seed))
