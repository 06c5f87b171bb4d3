"""How token rows reach the model: ragged rows padded into one (B, T) batch, run in eval mode without gradients."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def pad_rows(rows: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) token ids and attention mask from ragged rows, padded on ``side`` ("right" or "left")."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        cols = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[i, cols] = torch.tensor(row, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def range_mask(ranges: Sequence[range], width: int) -> torch.Tensor:
    """(B, width) bool, row b True at the positions of ``ranges[b]`` (ranges of step 1), e.g. a batch's scored tokens.

    >>> range_mask([range(1, 3), range(0)], 4)
    tensor([[False,  True,  True, False],
            [False, False, False, False]])
    """
    starts = torch.tensor([r.start for r in ranges])[:, None]  # (B, 1)
    stops = torch.tensor([r.stop for r in ranges])[:, None]
    columns = torch.arange(width)  # (width,)
    return (columns >= starts) & (columns < stops)


@contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the block; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
