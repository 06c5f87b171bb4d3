"""Shared pieces of the bootstrap and permutation procedures: seeded index draws and percentile intervals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch


class Interval(NamedTuple):
    """A point estimate with a two-sided percentile-bootstrap interval at confidence ``level``."""

    estimate: float
    low: float
    high: float
    level: float


def bootstrap_indices(n: int, n_resamples: int, seed: int, chunk: int) -> Iterator[torch.Tensor]:
    """Yield (r, n) int64 resample indices, r <= chunk, n_resamples rows in all; deterministic given the seed."""
    generator = torch.Generator().manual_seed(seed)
    done = 0
    while done < n_resamples:
        r = min(chunk, n_resamples - done)
        yield torch.randint(0, n, (r, n), generator=generator)
        done += r


def percentile_interval(estimate: float, replicates: torch.Tensor, level: float) -> Interval:
    """Percentile interval of bootstrap replicates (a 1-D float tensor)."""
    alpha = (1.0 - level) / 2.0
    q = torch.quantile(replicates.double(), torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
    return Interval(float(estimate), float(q[0]), float(q[1]), level)
