"""Half-precision model outputs are measured, not refused for their rounding (issue 14, item 6)."""

from __future__ import annotations

import pytest
import torch

from kdlens import measures as M


def logits_and_labels():
    g = torch.Generator().manual_seed(0)
    return torch.randn(500, 10, generator=g) * 3, torch.randint(0, 10, (500,), generator=g)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_softmax_is_accepted_and_measured_like_float32(dtype):
    z, y = logits_and_labels()
    half = z.to(dtype).softmax(-1)
    assert float((half.float().sum(-1) - 1).abs().max()) > 1e-3 or dtype == torch.float16  # bf16 drifts past 1e-3
    assert M.expected_calibration_error(half, y) == pytest.approx(M.expected_calibration_error(z.softmax(-1), y),
                                                                  abs=1e-2)


def test_rows_off_by_more_than_the_rounding_are_still_refused():
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="rows that sum to 1"):
        M.expected_calibration_error(torch.full((4, 10), 0.105, dtype=torch.bfloat16), y)  # 5% off
    with pytest.raises(ValueError, match="rows that sum to 1"):
        M.expected_calibration_error(torch.full((4, 10), 0.1002), y)  # float32 keeps its 1e-3
