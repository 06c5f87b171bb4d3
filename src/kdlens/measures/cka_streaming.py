"""Streaming CKA as ``torchmetrics.Metric`` subclasses: ``update()`` per batch, ``compute()`` at the end.

``CKAMatrix`` / ``LinearCKA`` are **exact**: they accumulate float64 raw co-moments (sums of x, x x', x y', and of
the squared row norms the debiased estimator needs), whose size depends on the widths, never on the number of
examples; centring happens once, in ``compute()``. All states are sums, so they add across processes.

``MinibatchCKA`` is Nguyen et al.'s (2021) estimator: the unbiased HSIC of each batch, averaged over batches.
It is not the full-data CKA, but it is unbiased for the population HSIC and cheap for very wide layers.

Centring raw moments loses ~``(|mean| / std)^2 * 1e-16`` relative precision: exact to 1e-9 for activations whose
mean is up to ~1e3 standard deviations from zero. Each process must see at least one batch before a sync.
"""

from __future__ import annotations

import difflib

import torch
from torchmetrics import Metric

from kdlens import validation as C
from kdlens.measures.cka import (
    check_pair,
    check_streaming_range,
    features,
    hsic_numerator,
    hsic_scale,
    ratio,
    summarize,
)


def _zero() -> torch.Tensor:
    # Scalar default: the first update broadcasts it to the state's real shape, so widths need not be declared.
    return torch.tensor(0.0, dtype=torch.float64)


def _blocks(widths: list[int]) -> list[slice]:
    starts = [0]
    for w in widths:
        starts.append(starts[-1] + w)
    return [slice(starts[i], starts[i + 1]) for i in range(len(widths))]


class CKAMatrix(Metric):
    """Exact streaming linear CKA between every layer of model A and every layer of model B.

    ``update(feats_a, feats_b)`` takes two dicts of layer name to (batch, d) features (or (batch, tokens, d) with
    ``pool``); one matmul per batch covers every layer pair. ``compute()`` returns a (len(layers_a),
    len(layers_b)) float64 tensor equal to :func:`kdlens.measures.cka_matrix` on the concatenated data.

    Parameters
    ----------
    layers_a, layers_b : sequences of layer names, fixing the matrix's row and column order
    debiased : bool, Song's unbiased HSIC (as in :func:`linear_cka`)
    pool : None | "mean" | "flatten", the policy for 3-D features

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(256, 16, generator=g)
    >>> metric = CKAMatrix(["conv", "fc"], ["fc"])
    >>> for batch in x.split(64):
    ...     metric.update({"conv": batch, "fc": batch.tanh()}, {"fc": batch})
    >>> metric.compute().shape
    torch.Size([2, 1])
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    _samples_name = "feats_a"

    def __init__(self, layers_a, layers_b, debiased: bool = False, pool: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layers_a, self.layers_b = self._names(layers_a, "layers_a"), self._names(layers_b, "layers_b")
        self.debiased = bool(debiased)
        self.pool = None if pool is None else C.check_choice(pool, "pool", ("mean", "flatten"))
        self.widths_a: list[int] | None = None
        self.widths_b: list[int] | None = None
        names = ["n", "sum_a", "sum_b", "cross", "sq_a", "sq_b", "sqsq_a", "sqsq_b", "sqx_a", "sqx_b",
                 "sq_ab", "sqa_y", "sqb_x"]
        names += [f"gram_a{i}" for i in range(len(self.layers_a))]
        names += [f"gram_b{j}" for j in range(len(self.layers_b))]
        for name in names:
            self.add_state(name, default=_zero(), dist_reduce_fx="sum")

    @staticmethod
    def _names(layers, name: str) -> list[str]:
        if isinstance(layers, str) or not layers:
            C.fail(name, "a non-empty list of layer names", repr(layers), error=TypeError)
        return [str(layer) for layer in layers]

    def _side(self, feats, expected: list[str], name: str) -> list[torch.Tensor]:
        if not isinstance(feats, dict):
            C.fail(name, "a dict of layer name to (batch, d) features", type(feats).__name__, error=TypeError)
        missing = [k for k in expected if k not in feats]
        if missing:
            close = difflib.get_close_matches(missing[0], list(feats), n=3)
            hint = f"Did you mean {', '.join(map(repr, close))}?" if close else f"It has {sorted(feats)}."
            C.fail(name, f"a dict with layers {expected}", f"no {missing[0]!r}", hint, error=KeyError)
        return [features(feats[k], self._label(name, k), self.pool) for k in expected]

    def _label(self, side: str, key: str) -> str:
        """How an input is named in error messages."""
        return f"{side}[{key!r}]"

    def update(self, feats_a: dict, feats_b: dict) -> None:
        xs = self._side(feats_a, self.layers_a, "feats_a")
        ys = self._side(feats_b, self.layers_b, "feats_b")
        named = [(f, self._label("feats_a", k)) for f, k in zip(xs, self.layers_a, strict=True)]
        named += [(f, self._label("feats_b", k)) for f, k in zip(ys, self.layers_b, strict=True)]
        for f, name in named[1:]:
            C.check_same_length(named[0][0], f, named[0][1], name)
        for f, name in named:
            check_streaming_range(f, name)
        widths_a, widths_b = [x.shape[1] for x in xs], [y.shape[1] for y in ys]
        if self.widths_a is None:
            self.widths_a, self.widths_b = widths_a, widths_b
        elif (widths_a, widths_b) != (self.widths_a, self.widths_b):
            C.fail("feats_a", f"the same widths in every batch ({self.widths_a}, {self.widths_b})",
                   f"({widths_a}, {widths_b})")
        x, y = torch.cat(xs, dim=1), torch.cat(ys, dim=1)  # (b, Da), (b, Db)
        a = torch.stack([v.square().sum(1) for v in xs], dim=1)  # (b, La): squared row norm per layer
        b = torch.stack([v.square().sum(1) for v in ys], dim=1)  # (b, Lb)
        dev = self.n.device
        self.n = self.n + x.shape[0]
        self.sum_a = self.sum_a + x.sum(0).to(dev)
        self.sum_b = self.sum_b + y.sum(0).to(dev)
        self.cross = self.cross + (x.T @ y).to(dev)
        self.sq_a, self.sq_b = self.sq_a + a.sum(0).to(dev), self.sq_b + b.sum(0).to(dev)
        self.sqsq_a, self.sqsq_b = self.sqsq_a + a.square().sum(0).to(dev), self.sqsq_b + b.square().sum(0).to(dev)
        self.sqx_a = self.sqx_a + torch.cat([a[:, i] @ v for i, v in enumerate(xs)]).to(dev)
        self.sqx_b = self.sqx_b + torch.cat([b[:, j] @ v for j, v in enumerate(ys)]).to(dev)
        self.sq_ab = self.sq_ab + (a.T @ b).to(dev)
        self.sqa_y = self.sqa_y + (a.T @ y).to(dev)
        self.sqb_x = self.sqb_x + (b.T @ x).to(dev)
        for i, v in enumerate(xs):
            setattr(self, f"gram_a{i}", getattr(self, f"gram_a{i}") + (v.T @ v).to(dev))
        for j, v in enumerate(ys):
            setattr(self, f"gram_b{j}", getattr(self, f"gram_b{j}") + (v.T @ v).to(dev))

    def _self_terms(self, gram, total, sq, sqsq, sqx, n):
        """Centred (||X'X||_F^2, sum_i |x_i|^4, sum_i |x_i|^2) from one layer's raw moments."""
        mu = total / n
        m = mu @ mu
        centred_gram = gram - n * torch.outer(mu, mu)
        sum_sq = sq - n * m
        sum_sqsq = sqsq - 4 * (sqx @ mu) + 2 * m * sq + 4 * (mu @ gram @ mu) - 3 * n * m * m
        return centred_gram.square().sum(), sum_sqsq, sum_sq, mu, m

    def compute(self) -> torch.Tensor:
        n = float(self.n)
        if self.widths_a is None and n > 0:  # states merged in (``merge_state``) rather than updated here
            self.widths_a = [getattr(self, f"gram_a{i}").shape[0] for i in range(len(self.layers_a))]
            self.widths_b = [getattr(self, f"gram_b{j}").shape[0] for j in range(len(self.layers_b))]
        if self.widths_a is None or n == 0:
            C.fail(type(self).__name__, "updated with at least one batch before compute()", "no batches")
        minimum, estimator = (4, "debiased (unbiased-HSIC) CKA") if self.debiased else (2, "CKA")
        C.check_min_samples(int(n), minimum, self._samples_name, estimator)
        blocks_a, blocks_b = _blocks(self.widths_a), _blocks(self.widths_b)
        side_a = [self._self_terms(getattr(self, f"gram_a{i}"), self.sum_a[s], self.sq_a[i], self.sqsq_a[i],
                                   self.sqx_a[s], n) for i, s in enumerate(blocks_a)]
        side_b = [self._self_terms(getattr(self, f"gram_b{j}"), self.sum_b[s], self.sq_b[j], self.sqsq_b[j],
                                   self.sqx_b[s], n) for j, s in enumerate(blocks_b)]
        out = torch.empty(len(blocks_a), len(blocks_b), dtype=torch.float64)
        for i, sa in enumerate(blocks_a):
            frob_xx, sqsq_x, sq_x, mu, m = side_a[i]
            hxx = hsic_numerator(frob_xx, sqsq_x, sq_x, sq_x, n, self.debiased)
            for j, sb in enumerate(blocks_b):
                frob_yy, sqsq_y, sq_y, nu, m2 = side_b[j]
                hyy = hsic_numerator(frob_yy, sqsq_y, sq_y, sq_y, n, self.debiased)
                raw_cross = self.cross[sa, sb]
                frob_xy = (raw_cross - n * torch.outer(mu, nu)).square().sum()
                sum_ab = (self.sq_ab[i, j] - 2 * (self.sqa_y[i, sb] @ nu) - 2 * (self.sqb_x[j, sa] @ mu)
                          + m2 * self.sq_a[i] + m * self.sq_b[j] + 4 * (mu @ raw_cross @ nu) - 3 * n * m * m2)
                hxy = hsic_numerator(frob_xy, sum_ab, sq_x, sq_y, n, self.debiased)
                out[i, j] = ratio(hxy, hxx, hyy, self.layers_a[i], self.layers_b[j])
        return out

    def reset(self) -> None:
        super().reset()
        self.widths_a = self.widths_b = None


class LinearCKA(CKAMatrix):
    """Exact streaming linear CKA between x (batch, d1) and y (batch, d2): ``update(x, y)`` per batch.

    Equals :func:`kdlens.measures.linear_cka` on the concatenated batches (to float64 rounding) with memory
    O((d1 + d2)^2), whatever the number of examples.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(1000, 8, generator=torch.Generator().manual_seed(0))
    >>> metric = LinearCKA()
    >>> for batch in x.split(100):
    ...     metric.update(batch, 2 * batch + 1)
    >>> round(float(metric.compute()), 6)
    1.0
    """

    _samples_name = "x"

    def __init__(self, debiased: bool = False, pool: str | None = None, **kwargs) -> None:
        super().__init__(["x"], ["y"], debiased=debiased, pool=pool, **kwargs)

    def _label(self, side: str, key: str) -> str:
        return key

    def update(self, x, y) -> None:  # type: ignore[override]
        super().update({"x": x}, {"y": y})

    def compute(self) -> torch.Tensor:
        return super().compute()[0, 0]


class MinibatchCKA(Metric):
    """Minibatch CKA (Nguyen, Raghu & Kornblith 2021): mean unbiased HSIC over batches, then the CKA ratio.

    ``CKA = mean_b HSIC_u(X_b, Y_b) / sqrt(mean_b HSIC_u(X_b, X_b) * mean_b HSIC_u(Y_b, Y_b))``. A single batch
    gives exactly ``linear_cka(x, y, debiased=True)``. Batches of fewer than 4 examples are rejected (the
    unbiased estimator divides by n - 3).

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(512, 8, generator=torch.Generator().manual_seed(0))
    >>> metric = MinibatchCKA()
    >>> for batch in x.split(128):
    ...     metric.update(batch, batch)
    >>> round(float(metric.compute()), 6)
    1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, pool: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pool = None if pool is None else C.check_choice(pool, "pool", ("mean", "flatten"))
        for name in ("hsic_xy", "hsic_xx", "hsic_yy", "batches"):
            self.add_state(name, default=_zero(), dist_reduce_fx="sum")

    def update(self, x, y) -> None:
        fx, fy = check_pair(x, y, self.pool, debiased=True)
        s = summarize(fx, fy, rescale=False)  # batches are summed: one scale for all
        scale = hsic_scale(s.n, debiased=True)
        dev = self.hsic_xy.device
        self.hsic_xy += (scale * hsic_numerator(s.cross, s.sum_ab, s.sum_a, s.sum_b, s.n, True)).to(dev)
        self.hsic_xx += (scale * hsic_numerator(s.self_x, s.sum_aa, s.sum_a, s.sum_a, s.n, True)).to(dev)
        self.hsic_yy += (scale * hsic_numerator(s.self_y, s.sum_bb, s.sum_b, s.sum_b, s.n, True)).to(dev)
        self.batches += 1

    def compute(self) -> torch.Tensor:
        if float(self.batches) == 0:
            C.fail("MinibatchCKA", "updated with at least one batch before compute()", "no batches")
        return torch.tensor(ratio(self.hsic_xy, self.hsic_xx, self.hsic_yy), dtype=torch.float64)

