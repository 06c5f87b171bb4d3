"""Text as the common ground: character spans of words, and token states pooled over any spans.

Two models that tokenize a text differently cannot be compared token by token; pooled over the same character spans
(words, sentences, answers) their states become matrices with the same rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from kdlens import validation as C
from kdlens.subjects.lm.results import Span


def word_spans(text: str) -> list[Span]:
    """(start, end) character spans of the whitespace-separated words of ``text``.

    >>> word_spans("the cat  sat.")
    [(0, 3), (4, 7), (9, 13)]
    """
    return [match.span() for match in re.finditer(r"\S+", text)]


def pool_by_spans(states: torch.Tensor, offsets: Sequence[Span], spans: Sequence[Span]) -> torch.Tensor:
    """Average the token states that overlap each character span: one row per span, whatever the tokenizer.

    Two models that tokenize a text differently give comparable (len(spans), d) matrices this way (per word with
    :func:`word_spans`, per sentence, per answer). A token overlaps [start, end) when its own non-empty span
    intersects it; special tokens (empty spans) never count.

    Parameters
    ----------
    states : (T, d) tensor, one row per token
    offsets : T (start, end) character spans of the tokens
    spans : (start, end) character spans to pool over

    Returns
    -------
    (len(spans), d) tensor in ``states``' dtype

    Examples
    --------
    >>> states = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    >>> pool_by_spans(states, [(0, 0), (0, 2), (2, 4), (5, 8)], [(0, 4), (5, 8)])
    tensor([[2.],
            [5.]])
    """
    states = C.as_float(states, "states")
    C.check_ndim(states, "states", 2, "(T, d)")
    if len(offsets) != states.shape[0]:
        C.fail("offsets", f"one span per row of states ({states.shape[0]})", f"{len(offsets)} spans")
    if len(spans) == 0:
        C.fail("spans", "at least one (start, end) span", "none")
    tok = torch.as_tensor([tuple(o) for o in offsets], dtype=torch.long).reshape(-1, 2)  # (T, 2)
    want = torch.as_tensor([tuple(s) for s in spans], dtype=torch.long).reshape(-1, 2)  # (S, 2)
    overlap = ((tok[None, :, 0] < want[:, None, 1]) & (tok[None, :, 1] > want[:, None, 0])
               & (tok[None, :, 1] > tok[None, :, 0]))  # (S, T)
    counts = overlap.sum(1)  # (S,)
    if bool((counts == 0).any()):
        i = int((counts == 0).nonzero()[0])
        C.fail(f"spans[{i}]", "a span that overlaps at least one token", f"{tuple(spans[i])}, which overlaps none",
               "Spans are character positions in the text the offsets came from; whitespace alone has no tokens.")
    weights = overlap.to(states.dtype) / counts[:, None].to(states.dtype)  # (S, T), rows sum to 1
    return weights.to(states.device) @ states  # (S, d)
