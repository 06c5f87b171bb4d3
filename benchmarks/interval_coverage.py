"""How often do kdlens's 95% CKA intervals cover the population CKA? A simulation, not a speed test.

    .venv/bin/python benchmarks/interval_coverage.py            # about 2 minutes on 2 cores

Each setting draws 60 independent data sets of n examples, y = x W + noise, and asks whether
``cka_bootstrap_interval`` contains the CKA of 200,000 fresh examples (the population value to ~1e-3).
"""

from __future__ import annotations

import torch

from kdlens import measures as M

SETTINGS = [(2.0, 200), (6.0, 100), (1.0, 50)]  # (noise scale, n): signal shrinks as noise grows
DATA_SETS, RESAMPLES = 60, 200


def draw(n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    weights = torch.randn(20, 15, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 30, generator=g, dtype=torch.float64)
    return x, x[:, :20] @ weights.double() + noise * torch.randn(n, 15, generator=g, dtype=torch.float64)


def main() -> None:
    print(f"{'noise':>5} {'n':>4} {'estimator':>9} {'population':>10} {'coverage':>8} {'mean width':>10}")
    for noise, n in SETTINGS:
        truth = M.linear_cka(*draw(200_000, noise, seed=99))
        for debiased in (False, True):
            hits, width = 0, 0.0
            for seed in range(DATA_SETS):
                x, y = draw(n, noise, seed=1000 + seed)
                ci = M.cka_bootstrap_interval(x, y, n_resamples=RESAMPLES, debiased=debiased, seed=seed)
                hits += ci.low <= truth <= ci.high
                width += (ci.high - ci.low) / DATA_SETS
            name = "debiased" if debiased else "biased"
            print(f"{noise:5.1f} {n:4d} {name:>9} {truth:10.3f} {hits / DATA_SETS:8.0%} {width:10.3f}")


if __name__ == "__main__":
    main()
