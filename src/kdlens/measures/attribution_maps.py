"""Comparing attribution maps: does the student look where the teacher looks?

Maps are ``(n, h, w)`` float tensors (or numpy arrays), one per example, as attribution methods return them:
unnormalised, nonnegative for GradCAM and saliency, signed for e.g. input x gradient. The three comparisons
(:func:`map_spearman`, :func:`map_topk_iou`, :func:`map_cosine`) are invariant to scaling a map by a positive
number, so they need no normalisation; :func:`normalize_maps` is there for display and for measures that read
values, not ranks. Maps of different resolutions (a 7x7 GradCAM against a 14x14 one, or a 224x224 saliency map)
are brought to a common grid by :func:`align_maps` before they are compared.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdlens import validation as C

REDUCTIONS = ("mean", "none")
MODES = ("bilinear", "bicubic", "nearest", "nearest-exact", "area")
NORMALIZATIONS = ("minmax", "sum", "l2", "abs")
_CHUNK_ELEMENTS = 4_000_000  # map positions sorted at once (rows x h*w)


def check_maps(x, name: str) -> torch.Tensor:
    """(n, h, w) finite float maps with n, h, w >= 1 (shared with :mod:`kdlens.measures.evidence`)."""
    t = C.as_float(x, name)
    if t.ndim != 3:
        if t.ndim == 4 and t.shape[1] == 1:
            fix = f"Squeeze the channel axis: {name}.squeeze(1)."
        elif t.ndim == 4:
            fix = f"Reduce the channels to one map per example first, e.g. {name}.sum(1) or {name}.abs().amax(1)."
        elif t.ndim == 2:
            fix = (f"For flattened maps of shape (n, h*w) reshape with {name}.view(n, h, w); "
                   f"for a single (h, w) map add the batch axis with {name}[None].")
        else:
            fix = "Pass one 2-D map per example."
        C.fail(name, "3-D of shape (n, h, w)", f"shape {tuple(t.shape)}", fix)
    if t.numel() == 0:
        C.fail(name, "non-empty (n, h, w >= 1)", f"shape {tuple(t.shape)}")
    C.check_finite(t, name)
    return t


def _check_pair(maps_a, maps_b) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = check_maps(maps_a, "maps_a"), check_maps(maps_b, "maps_b")
    C.check_same_length(a, b, "maps_a", "maps_b")
    return a, b.to(a.device)


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    ok = isinstance(size, (tuple, list)) and len(size) == 2 and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
    if not ok:
        C.fail("size", "None or a pair of positive integers (h, w)", repr(size), "For example size=(224, 224).")
    return int(size[0]), int(size[1])


def reduce_scores(values: torch.Tensor, reduction: str):
    """(n,) per-example scores -> themselves ("none") or their NaN-ignoring mean as a float ("mean")."""
    if reduction == "mean":
        return float(torch.nanmean(values))  # all-NaN -> nan
    return values


def resize(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """(n, h, w) -> (n, *size) with F.interpolate; a map already at ``size`` is returned as is.

    Bilinear and bicubic use ``align_corners=False`` (pixel centres, the convention of image resizing and of
    GradCAM's upsampling) and antialias when an axis shrinks; upsampling is unaffected by the antialias flag.
    """
    if tuple(maps.shape[1:]) == size:
        return maps
    work = maps if maps.dtype in (torch.float32, torch.float64) else maps.float()  # half: no CPU antialias kernel
    options = {}
    if mode in ("bilinear", "bicubic"):
        options = {"align_corners": False, "antialias": size[0] < maps.shape[1] or size[1] < maps.shape[2]}
    out = F.interpolate(work[:, None], size=size, mode=mode, **options)[:, 0]  # (n, H, W)
    return out.to(maps.dtype)


def align_maps(maps_a, maps_b, size=None, mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """Bring two sets of maps to one spatial grid.

    By default the common grid is the larger of the two resolutions, axis by axis: the coarser map is upsampled
    (``F.interpolate``, ``align_corners=False``), never the finer one pooled. Upsampling keeps all the detail the
    finer map has, while the coarse map is piecewise-smooth at any resolution, so nothing is invented and nothing
    is thrown away; pooling the fine map would compare the two only at the coarse grid. This is also how GradCAM
    maps are shown: upsampled to the input.

    Parameters
    ----------
    maps_a, maps_b : (n, h_a, w_a) and (n, h_b, w_b) float tensors or arrays, the same n
    size : None or (h, w)
        Force this grid instead (maps larger than it are downsampled, antialiased for bilinear and bicubic).
    mode : "bilinear" | "bicubic" | "nearest" | "nearest-exact" | "area"
        Interpolation mode of ``F.interpolate``. Bicubic may overshoot: a nonnegative map can get small negative
        values.

    Returns
    -------
    (a, b) : two (n, h, w) tensors, each of its input's dtype; a map already at the target grid is returned
    unchanged, so aligning a map with itself is the identity.

    Examples
    --------
    >>> import torch
    >>> a, b = align_maps(torch.rand(2, 7, 7), torch.rand(2, 14, 14))
    >>> tuple(a.shape), tuple(b.shape)
    ((2, 14, 14), (2, 14, 14))
    """
    C.check_choice(mode, "mode", MODES)
    size = _check_size(size)
    a, b = _check_pair(maps_a, maps_b)
    if size is None:
        size = (max(a.shape[1], b.shape[1]), max(a.shape[2], b.shape[2]))
    return resize(a, size, mode), resize(b, size, mode)


def normalize_maps(maps, method: str = "minmax") -> torch.Tensor:
    """Rescale each map on its own.

    Parameters
    ----------
    maps : (n, h, w) float tensor or array
    method : "minmax" | "sum" | "l2" | "abs"
        - "minmax": ``(x - min) / (max - min)``, in [0, 1]; a constant map becomes all zeros.
        - "sum": ``relu(x) / sum(relu(x))``, a distribution over positions (nonnegative, sums to 1); a map with
          no positive value becomes all zeros.
        - "l2": ``x / ||x||_2`` (unit Euclidean norm, sign kept); a zero map stays zero.
        - "abs": ``|x| / max|x|``, in [0, 1]; a zero map stays zero.

    Returns
    -------
    (n, h, w) tensor of the input's dtype (computed in float64).

    Examples
    --------
    >>> import torch
    >>> normalize_maps(torch.tensor([[[1.0, 3.0]]]), "sum")
    tensor([[[0.2500, 0.7500]]])
    """
    C.check_choice(method, "method", NORMALIZATIONS)
    t = check_maps(maps, "maps")
    x = t.double().flatten(1)  # (n, N)
    if method == "minmax":
        low, high = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
        x, scale = x - low, high - low
    elif method == "sum":
        x = x.clamp_min(0.0)
        scale = x.sum(1, keepdim=True)
    elif method == "l2":
        scale = x.norm(dim=1, keepdim=True)
    else:
        x = x.abs()
        scale = x.amax(1, keepdim=True)
    out = torch.where(scale > 0, x / torch.where(scale > 0, scale, 1.0), 0.0)
    return out.view(t.shape).to(t.dtype)


def _flat_pair(maps_a, maps_b) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated, float64, aligned to the larger grid, flattened: two (n, N) tensors."""
    a, b = _check_pair(maps_a, maps_b)
    size = (max(a.shape[1], b.shape[1]), max(a.shape[2], b.shape[2]))
    return resize(a.double(), size).flatten(1), resize(b.double(), size).flatten(1)


def _chunks(n: int, width: int):
    rows = max(1, _CHUNK_ELEMENTS // width)
    return [slice(i, i + rows) for i in range(0, n, rows)]


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """(r, N) -> (r, N) float64 ranks 1..N along each row, tied values sharing their average rank."""
    r, n = x.shape
    sorted_x, order = x.sort(dim=1, stable=True)
    pos = torch.arange(n, device=x.device).expand(r, n)  # (r, N)
    first = torch.ones(r, n, dtype=torch.bool, device=x.device)  # first position of each run of equal values
    first[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    last = torch.ones_like(first)  # last position of each run
    last[:, :-1] = first[:, 1:]
    start = torch.where(first, pos, 0).cummax(dim=1).values  # carry each run's start forward
    end = torch.where(last, pos, n - 1).flip(1).cummin(dim=1).values.flip(1)  # and its end backward
    ranks_sorted = (start + end).double() / 2.0 + 1.0
    return torch.empty_like(ranks_sorted).scatter_(1, order, ranks_sorted)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise correlation of (r, N) float64 tensors; NaN where either row is constant."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / torch.where(den > 0, den, 1.0)
    return torch.where(den > 0, r.clamp(-1.0, 1.0), math.nan)


def map_spearman(maps_a, maps_b, reduction: str = "mean"):
    """Spearman rank correlation between each pair of flattened maps, in [-1, 1].

    Tied values get the average of the ranks they span (as ``scipy.stats.spearmanr`` does); this matters because
    ReLU'd maps hold many exact zeros. Ties are exact equality of the float values, after alignment. Maps of
    different resolutions are aligned first with :func:`align_maps` (the coarser upsampled bilinearly).

    A constant map has no ranking, so its correlation is undefined: that example scores NaN, and
    ``reduction="mean"`` averages the other examples (``nanmean``; NaN if every example is NaN).

    Parameters
    ----------
    maps_a, maps_b : (n, h, w) float tensors or arrays, the same n
    reduction : "mean" | "none"
        "mean" returns a float; "none" a (n,) float64 tensor.

    Examples
    --------
    >>> import torch
    >>> a = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]])
    >>> map_spearman(a, a ** 3 + 5)  # any increasing transform keeps the ranks
    1.0
    """
    C.check_choice(reduction, "reduction", REDUCTIONS)
    a, b = _flat_pair(maps_a, maps_b)
    rho = torch.cat([_pearson(_average_ranks(a[rows]), _average_ranks(b[rows])) for rows in _chunks(*a.shape)])
    return reduce_scores(rho, reduction)


def _check_fraction(k) -> float:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k <= 1:
        C.fail("k", "a fraction of positions in (0, 1]", repr(k), "k=0.2 keeps the top 20% of each map.")
    return float(k)


def _top_positions(x: torch.Tensor, m: int) -> torch.Tensor:
    """(r, N) -> (r, N) bool, True at the m largest values of each row; ties go to the lower position index."""
    order = x.sort(dim=1, descending=True, stable=True).indices[:, :m]  # stable: equal values keep index order
    return torch.zeros_like(x, dtype=torch.bool).scatter_(1, order, True)


def map_topk_iou(maps_a, maps_b, k: float = 0.2, reduction: str = "mean"):
    """Intersection over union of the top-k fraction of positions of each map, in [0, 1].

    Each map keeps its ``m = ceil(k * N)`` largest positions (N = h * w after alignment; ``k * N`` that is a whole
    number up to float rounding is not rounded up). Positions are taken by descending value with ties broken by
    position index, lower (row-major) first, so the result is deterministic; when ``k`` reaches past a map's
    positive values into a run of zeros, which zeros are kept is that arbitrary but fixed order, so prefer a ``k``
    below the fraction of positive positions. Both sets have m positions, so IoU = 1 means the same set and
    ``k=1`` always gives 1. Maps of different resolutions are aligned first with :func:`align_maps`.

    Parameters
    ----------
    maps_a, maps_b : (n, h, w) float tensors or arrays, the same n
    k : float in (0, 1]
    reduction : "mean" | "none"
        "mean" returns a float; "none" a (n,) float64 tensor.

    Examples
    --------
    >>> import torch
    >>> a = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    >>> b = torch.tensor([[[4.0, 1.0], [3.0, 2.0]]])
    >>> map_topk_iou(a, b, k=0.5)  # {0, 1} vs {0, 2}: 1 shared of 3
    0.3333333333333333
    """
    C.check_choice(reduction, "reduction", REDUCTIONS)
    k = _check_fraction(k)
    a, b = _flat_pair(maps_a, maps_b)
    n_positions = a.shape[1]
    m = min(n_positions, max(1, math.ceil(k * n_positions - 1e-9)))
    inter = torch.cat([(_top_positions(a[rows], m) & _top_positions(b[rows], m)).sum(1)
                       for rows in _chunks(*a.shape)]).double()
    return reduce_scores(inter / (2 * m - inter), reduction)


def map_cosine(maps_a, maps_b, reduction: str = "mean"):
    """Cosine similarity of each pair of flattened maps, in [-1, 1] ([0, 1] for nonnegative maps).

    Unlike :func:`map_spearman` it reads values, not ranks: large values dominate. A map that is all zeros has no
    direction, so that example scores NaN and ``reduction="mean"`` averages the others (``nanmean``). Maps of
    different resolutions are aligned first with :func:`align_maps`.

    Parameters
    ----------
    maps_a, maps_b : (n, h, w) float tensors or arrays, the same n
    reduction : "mean" | "none"
        "mean" returns a float; "none" a (n,) float64 tensor.

    Examples
    --------
    >>> import torch
    >>> map_cosine(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0, 1.0]]]))  # cos 45 degrees
    0.7071067811865475
    """
    C.check_choice(reduction, "reduction", REDUCTIONS)
    a, b = _flat_pair(maps_a, maps_b)
    den = a.norm(dim=1) * b.norm(dim=1)
    cos = (a * b).sum(1) / torch.where(den > 0, den, 1.0)
    return reduce_scores(torch.where(den > 0, cos.clamp(-1.0, 1.0), math.nan), reduction)
