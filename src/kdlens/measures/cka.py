"""Centered kernel alignment (CKA, Kornblith et al. 2019): how similar two layers' representations are.

``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` for Gram matrices K of x and L of y over the same n
examples. ``debiased=True`` replaces the biased HSIC with Song et al.'s (2012) unbiased estimator

    HSIC_u = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)),   K~ = K with its diagonal zeroed,

which for the linear kernel on centred features reduces to sums the feature-space path computes in O(n d^2):
``||X'Y||_F^2 - n/(n-2) sum_i |x_i|^2 |y_i|^2 + (sum_i |x_i|^2)(sum_i |y_i|^2) / ((n-1)(n-2))``.

Everything is accumulated in float64, whatever the input dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from kdlens import validation as C

POOLS = ("mean", "flatten")
RBF_MAX_EXAMPLES = 20_000  # n x n float64 Gram matrices: 3.2 GB each at this size


class Summary(NamedTuple):
    """Sufficient statistics of linear CKA between centred x (n, d1) and y (n, d2); all float64 scalars."""

    n: float
    cross: torch.Tensor  # ||X'Y||_F^2
    self_x: torch.Tensor  # ||X'X||_F^2
    self_y: torch.Tensor  # ||Y'Y||_F^2
    sum_ab: torch.Tensor  # sum_i |x_i|^2 |y_i|^2
    sum_aa: torch.Tensor  # sum_i |x_i|^4
    sum_bb: torch.Tensor  # sum_i |y_i|^4
    sum_a: torch.Tensor  # sum_i |x_i|^2
    sum_b: torch.Tensor  # sum_i |y_i|^2


def features(x, name: str, pool: str | None = None) -> torch.Tensor:
    """Validate and flatten representations to (n, d) float64.

    (n, d) passes through; (n, tokens or positions, d) needs ``pool="mean"`` (average over positions) or
    ``pool="flatten"`` (concatenate positions: (n, tokens * d)).
    """
    if pool is not None:
        C.check_choice(pool, "pool", POOLS)
    t = C.as_float(x, name)
    if t.ndim == 3:
        if pool is None:
            C.fail(name, "(n, d), or (n, tokens, d) with a pooling policy", f"shape {tuple(t.shape)} and no pool",
                   'Pass pool="mean" to average over tokens/positions or pool="flatten" to concatenate them.')
        t = t.mean(dim=1) if pool == "mean" else t.reshape(t.shape[0], -1)
    elif t.ndim != 2:
        C.fail(name, "2-D (n, d) or 3-D (n, tokens, d)", f"shape {tuple(t.shape)}",
               "For conv maps (n, C, H, W) pass x.flatten(2).transpose(1, 2) with a pool policy.")
    if t.shape[1] < 1:
        C.fail(name, "at least one feature", f"shape {tuple(t.shape)}")
    C.check_finite(t, name)
    return t.double()


def check_pair(x, y, pool, debiased: bool, name_x: str = "x", name_y: str = "y"):
    """Validated float64 (n, d1), (n, d2) pair with enough examples for the estimator."""
    fx, fy = features(x, name_x, pool), features(y, name_y, pool)
    C.check_same_length(fx, fy, name_x, name_y)
    minimum, estimator = (4, "debiased (unbiased-HSIC) CKA") if debiased else (2, "CKA")
    C.check_min_samples(fx.shape[0], minimum, name_x, estimator)
    return fx, fy


def _frobenius_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a'b||_F^2 for a (n, d1), b (n, d2), by whichever of the feature or Gram route is cheaper."""
    n, d1 = a.shape
    d2 = b.shape[1]
    if n * d1 * d2 <= n * n * (d1 + d2):
        return (a.T @ b).square().sum()
    return ((a @ a.T) * (b @ b.T)).sum()


def _unit_scaled(x: torch.Tensor) -> torch.Tensor:
    """``x`` times the power of two that brings its largest magnitude into [0.5, 1): exact in floating point."""
    largest = x.abs().max()
    return torch.ldexp(x, -torch.frexp(largest).exponent) if largest > 0 else x


def centred(x: torch.Tensor, rescale: bool = True) -> torch.Tensor:
    """(n, d) float64 features centred, and (``rescale``) scaled by powers of two before and after, so that
    features as large as 1e300 or as small as 1e-300 keep their fourth powers inside float64's range. CKA is
    invariant to both, and the scaling rounds nothing: the result equals the unscaled one wherever that one is
    defined."""
    x = _unit_scaled(x) if rescale else x
    x = x - x.mean(dim=0, keepdim=True)
    return _unit_scaled(x) if rescale else x


def summarize(x: torch.Tensor, y: torch.Tensor, rescale: bool = True) -> Summary:
    """Summary of validated float64 features, :func:`centred` first (``rescale=False`` where summaries of
    different batches are added, and so must share one scale)."""
    x, y = centred(x, rescale), centred(y, rescale)
    a, b = x.square().sum(1), y.square().sum(1)  # (n,), (n,)
    return Summary(float(x.shape[0]), _frobenius_sq(x, y), _frobenius_sq(x, x), _frobenius_sq(y, y),
                   (a * b).sum(), a.square().sum(), b.square().sum(), a.sum(), b.sum())


def hsic_numerator(frob: torch.Tensor, sum_ab, sum_a, sum_b, n: float, debiased: bool) -> torch.Tensor:
    """HSIC up to the factor 1/(n-1)^2 (biased) or 1/(n(n-3)) (debiased) that cancels in CKA."""
    if not debiased:
        return frob
    return frob - n / (n - 2) * sum_ab + sum_a * sum_b / ((n - 1) * (n - 2))


def hsic_scale(n: float, debiased: bool) -> float:
    """The factor that turns :func:`hsic_numerator` into the HSIC estimate."""
    return 1.0 / (n * (n - 3)) if debiased else 1.0 / (n - 1) ** 2


def cka_from_summary(s: Summary, debiased: bool, name_x: str = "x", name_y: str = "y") -> float:
    """CKA from sufficient statistics: the one formula behind the functional and streaming forms."""
    xy = hsic_numerator(s.cross, s.sum_ab, s.sum_a, s.sum_b, s.n, debiased)
    xx = hsic_numerator(s.self_x, s.sum_aa, s.sum_a, s.sum_a, s.n, debiased)
    yy = hsic_numerator(s.self_y, s.sum_bb, s.sum_b, s.sum_b, s.n, debiased)
    return ratio(xy, xx, yy, name_x, name_y)


STREAMING_RANGE = (1e-60, 1e60)  # magnitudes whose raw fourth-power sums stay inside float64


def check_streaming_range(x: torch.Tensor, name: str) -> None:
    """Refuse features whose raw float64 moments (kept uncentred across batches) would over- or underflow."""
    largest = float(x.abs().max())
    low, high = STREAMING_RANGE
    if largest > high or 0 < largest < low:
        C.fail(name, f"features of magnitude between {low:g} and {high:g} for streaming CKA (its float64 sums of "
               "fourth powers overflow or underflow beyond)", f"a largest magnitude of {largest:.3g}",
               "Multiply the features by one constant first (CKA does not change), or use linear_cka, which "
               "rescales them itself.")


def ratio(xy, xx, yy, name_x: str = "x", name_y: str = "y") -> float:
    """``xy / sqrt(xx yy)``, refusing a zero self-HSIC (constant features) and overflowed sums."""
    for value, name in ((xy, name_x), (xx, name_x), (yy, name_y)):
        if not torch.isfinite(torch.as_tensor(value)):
            C.fail(name, "finite HSIC sums", f"{float(value)} (float64 overflowed)",
                   "Multiply the features by one constant to bring them nearer 1; CKA does not change.")
    for value, name in ((xx, name_x), (yy, name_y)):
        if not float(value) > 0:
            C.fail(name, "features that vary across examples", "zero (or, debiased, non-positive) self-HSIC",
                   "Constant features have no CKA; drop them or gather more examples.")
    return float(xy / torch.sqrt(xx * yy))


def linear_cka(x, y, debiased: bool = False, pool: str | None = None) -> float:
    """Linear CKA between two representations of the same examples.

    Computed in feature space, ``||X'Y||_F^2 / (||X'X||_F ||Y'Y||_F)`` on centred float64 features (or through
    n x n Gram matrices when n is smaller than the widths), so cost is O(n d1 d2) and memory O(d1 d2).

    Parameters
    ----------
    x : (n, d1) or (n, tokens, d1) float
    y : (n, d2) or (n, tokens, d2) float
    debiased : bool
        Use Song et al.'s unbiased HSIC (needs n >= 4); near 0 for independent representations, where the
        biased estimate is inflated at small n.
    pool : None | "mean" | "flatten"
        Required for 3-D inputs: average over tokens/positions, or concatenate them.

    Returns
    -------
    float in [0, 1] (debiased: may dip slightly below 0)

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    >>> round(linear_cka(x, 3 * x + 1), 6)
    1.0
    """
    fx, fy = check_pair(x, y, pool, debiased)
    return cka_from_summary(summarize(fx, fy), debiased)


def _median(values: torch.Tensor) -> torch.Tensor:
    """The median as numpy defines it: the mean of the two middle values when their count is even."""
    m = values.numel()
    upper = torch.kthvalue(values, m // 2 + 1).values
    return upper if m % 2 else 0.5 * (upper + torch.kthvalue(values, m // 2).values)


def _rbf_gram(x: torch.Tensor, sigma: float) -> torch.Tensor:
    x = centred(x)  # keeps |a|^2 - 2ab + |b|^2 (cdist's matmul route) accurate and inside float64's range
    dist = torch.cdist(x, x)  # (n, n)
    n = x.shape[0]
    pairs = torch.triu_indices(n, n, offset=1, device=x.device)
    median = _median(dist[pairs[0], pairs[1]])
    sq_dist = dist.square()
    if not float(median) > 0:
        C.fail("x", "examples that are not all identical", "a median pairwise distance of 0")
    return torch.exp(-sq_dist / (2.0 * (sigma * median) ** 2))


def gram_hsic(k: torch.Tensor, l: torch.Tensor, debiased: bool) -> torch.Tensor:  # noqa: E741
    """HSIC numerator of two n x n Gram matrices (see :func:`hsic_numerator` for the scale)."""
    n = k.shape[0]
    if not debiased:
        kc = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()
        return (kc * l).sum()  # tr(HKH L) = <HKH, L>
    k = k - torch.diag(torch.diag(k))
    l = l - torch.diag(torch.diag(l))  # noqa: E741
    k1, l1 = k.sum(1), l.sum(1)
    return (k * l).sum() + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)


def rbf_cka(x, y, sigma: float = 0.8, debiased: bool = False, pool: str | None = None) -> float:
    """CKA with Gaussian (RBF) kernels.

    The bandwidth of each kernel is ``sigma`` times the median Euclidean distance between distinct examples
    (i < j) of that representation: ``k(u, v) = exp(-|u - v|^2 / (2 (sigma * median)^2))``. Memory is O(n^2):
    at most 20,000 examples (subsample, or use :func:`linear_cka`, beyond that).

    Parameters
    ----------
    x, y, debiased, pool : as in :func:`linear_cka`
    sigma : float > 0, fraction of the median pairwise distance

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    >>> round(rbf_cka(x, 2 * x), 6)
    1.0
    """
    sigma = C.check_positive(sigma, "sigma")
    fx, fy = check_pair(x, y, pool, debiased)
    if fx.shape[0] > RBF_MAX_EXAMPLES:
        C.fail("x", f"at most {RBF_MAX_EXAMPLES} examples for RBF CKA (n x n kernels)", f"{fx.shape[0]}",
               "Subsample the examples, or use linear_cka, whose memory does not grow with n.")
    k, l = _rbf_gram(fx, sigma), _rbf_gram(fy, sigma)  # noqa: E741
    return ratio(gram_hsic(k, l, debiased), gram_hsic(k, k, debiased), gram_hsic(l, l, debiased))


def cka_matrix(feats_a: dict, feats_b: dict, kernel: str = "linear", debiased: bool = False,
               pool: str | None = None, sigma: float = 0.8) -> torch.Tensor:
    """CKA between every layer of model A and every layer of model B on the same examples.

    Parameters
    ----------
    feats_a, feats_b : dict[str, (n, d) or (n, tokens, d) float]
        Layer name to representation; all layers share the same n examples.
    kernel : "linear" | "rbf"
    debiased, pool, sigma : as in :func:`linear_cka` and :func:`rbf_cka`

    Returns
    -------
    (len(feats_a), len(feats_b)) float64 tensor; entry [i, j] compares the i-th layer of A (dict order) with
    the j-th layer of B.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    >>> cka_matrix({"l1": x, "l2": x.relu()}, {"m1": x}).shape
    torch.Size([2, 1])
    """
    C.check_choice(kernel, "kernel", ("linear", "rbf"))
    for feats, name in ((feats_a, "feats_a"), (feats_b, "feats_b")):
        if not isinstance(feats, dict) or not feats:
            C.fail(name, "a non-empty dict of layer name to (n, d) features", type(feats).__name__,
                   error=TypeError)
    a = {k: features(v, f"feats_a[{k!r}]", pool) for k, v in feats_a.items()}
    b = {k: features(v, f"feats_b[{k!r}]", pool) for k, v in feats_b.items()}
    named = [(f"feats_a[{k!r}]", v) for k, v in a.items()] + [(f"feats_b[{k!r}]", v) for k, v in b.items()]
    first_name, first = named[0]
    for name, f in named[1:]:
        C.check_same_length(first, f, first_name, name)
    minimum, estimator = (4, "debiased (unbiased-HSIC) CKA") if debiased else (2, "CKA")
    C.check_min_samples(first.shape[0], minimum, first_name, estimator)
    out = torch.empty(len(a), len(b), dtype=torch.float64)
    if kernel == "rbf":
        grams_b = [_rbf_gram(v, sigma) for v in b.values()]
        self_b = [gram_hsic(g, g, debiased) for g in grams_b]
        for i, (name_a, xa) in enumerate(a.items()):
            ka = _rbf_gram(xa, sigma)
            self_a = gram_hsic(ka, ka, debiased)
            for j, name_b in enumerate(b):
                out[i, j] = ratio(gram_hsic(ka, grams_b[j], debiased), self_a, self_b[j], name_a, name_b)
        return out
    centred_a = {k: centred(v) for k, v in a.items()}
    centred_b = {k: centred(v) for k, v in b.items()}
    n = float(first.shape[0])

    def self_terms(v):
        sq = v.square().sum(1)
        return hsic_numerator(_frobenius_sq(v, v), sq.square().sum(), sq.sum(), sq.sum(), n, debiased), sq

    terms_a = {k: self_terms(v) for k, v in centred_a.items()}
    terms_b = {k: self_terms(v) for k, v in centred_b.items()}
    for i, (name_a, xa) in enumerate(centred_a.items()):
        hxx, sq_a = terms_a[name_a]
        for j, (name_b, yb) in enumerate(centred_b.items()):
            hyy, sq_b = terms_b[name_b]
            hxy = hsic_numerator(_frobenius_sq(xa, yb), (sq_a * sq_b).sum(), sq_a.sum(), sq_b.sum(), n, debiased)
            out[i, j] = ratio(hxy, hxx, hyy, name_a, name_b)
    return out
