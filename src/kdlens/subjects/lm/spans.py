"""Text as the common ground: character spans of words, and token states pooled over any spans.

Two models that tokenize a text differently cannot be compared token by token; pooled over the same character spans
(words, sentences, answers) their states become matrices with the same rows.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Sequence

import torch

from kdlens import validation as C
from kdlens.subjects.lm.results import Span


def word_spans(text: str) -> list[Span]:
    """(start, end) character spans of the whitespace-separated words of ``text``.

    >>> word_spans("the cat  sat.")
    [(0, 3), (4, 7), (9, 13)]
    """
    if not isinstance(text, str):
        C.fail("text", "a str", type(text).__name__, error=TypeError)
    return [match.span() for match in re.finditer(r"\S+", text)]


def continuation_tokens(offsets: Sequence[Span], seam: int) -> range:
    """Which tokens of ``context + continuation`` (their character ``offsets``) are the continuation's, the context
    ending at character ``seam``: from the first token with text whose span ends after the seam (a token straddling
    it counts) through the last token with text (special tokens, such as an appended eos, have empty spans); empty
    when no token with text ends after the seam.

    >>> continuation_tokens([(0, 0), (0, 4), (4, 7), (7, 9), (0, 0)], 5)  # bos, "mary", " we", "nt", eos
    range(2, 4)
    """
    first = next((t for t, (start, end) in enumerate(offsets) if end > start and end > seam), None)
    if first is None:
        return range(0)
    last = next(t for t in range(len(offsets) - 1, first - 1, -1) if offsets[t][1] > offsets[t][0])
    return range(first, last + 1)


def spans_from(spans: Sequence[Span], seam: int) -> list[Span]:
    """``spans`` counted from character ``seam`` of their text, clamped at 0 (a span across the seam starts at 0): the
    spans of a continuation's tokens in the continuation, from their spans in ``context + continuation``.

    >>> spans_from([(3, 7), (8, 10)], 5)
    [(0, 2), (3, 5)]
    """
    return [(start - seam if start > seam else 0, end - seam if end > seam else 0) for start, end in spans]


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
    C.check_finite(states, "states")
    tok = _span_tensor(offsets, "offsets")  # (T, 2)
    if len(tok) != states.shape[0]:
        C.fail("offsets", f"one span per row of states ({states.shape[0]})", f"{len(tok)} spans")
    want = _span_tensor(spans, "spans")  # (S, 2)
    if len(want) == 0:
        C.fail("spans", "at least one (start, end) span", "none")
    overlap = ((tok[None, :, 0] < want[:, None, 1]) & (tok[None, :, 1] > want[:, None, 0])
               & (tok[None, :, 1] > tok[None, :, 0]))  # (S, T)
    counts = overlap.sum(1)  # (S,)
    if bool((counts == 0).any()):
        i = int((counts == 0).nonzero()[0])
        C.fail(f"spans[{i}]", "a span that overlaps at least one token", f"{tuple(spans[i])}, which overlaps none",
               "Spans are character positions in the text the offsets came from; whitespace alone has no tokens.")
    weights = overlap.to(states.dtype) / counts[:, None].to(states.dtype)  # (S, T), rows sum to 1
    return weights.to(states.device) @ states  # (S, d)


def _span_tensor(spans, name: str) -> torch.Tensor:
    """(S, 2) int64 character spans from S (start, end) integer pairs (tuples, lists or a tensor's rows)."""
    try:
        t = torch.as_tensor([tuple(span) for span in spans])
    except (TypeError, ValueError, RuntimeError):
        C.fail(name, "a sequence of (start, end) integer pairs", reprlib.repr(spans), error=TypeError)
    if t.numel() == 0:
        return t.long().reshape(0, 2)
    if t.ndim != 2 or t.shape[1] != 2:
        C.fail(name, "a sequence of (start, end) pairs", f"items of shape {tuple(t.shape[1:])}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        C.fail(name, "integer character positions", f"dtype {t.dtype}", error=TypeError)
    return t.long()
