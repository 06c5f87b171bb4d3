"""What the :class:`~kdlens.subjects.lm.LanguageModel` operations return: per-token numbers with character spans."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch

Span = tuple[int, int]


@dataclass
class ContinuationScore:
    """Log-probabilities of a continuation's tokens given its context (natural log, nats).

    ``token_logprobs`` (k,) float32; ``token_ids`` the k token ids; ``offsets`` their (start, end) character spans
    in the continuation string; ``total`` their sum (accumulated in float64); ``mean`` the sum over k. ``tokens``,
    the k token strings, are made from the ids by ``token_strings`` (the tokenizer's ``convert_ids_to_tokens``) when
    first read: scoring alone does not need them. A pickled or copied score carries its token strings, not the
    tokenizer.
    """

    token_logprobs: torch.Tensor
    token_ids: list[int]
    offsets: list[Span]
    total: float
    mean: float
    token_strings: Callable[[list[int]], list[str]] = field(repr=False, compare=False)

    @cached_property
    def tokens(self) -> list[str]:
        """The k token strings (made once, on first use)."""
        return self.token_strings(self.token_ids)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "tokens": self.tokens, "token_strings": None}


@dataclass
class HiddenStates:
    """Per-token hidden states of one text: ``layers`` maps "embed", "layers.0", ... to (T, d) float32 tensors."""

    layers: dict[str, torch.Tensor]
    offsets: list[Span]
    tokens: list[str]


@dataclass
class TokenLogits:
    """Next-token logits of one text: ``logits`` (T, V) float32, row t predicting token t + 1; ``input_ids`` (T,)."""

    logits: torch.Tensor
    input_ids: torch.Tensor
    offsets: list[Span]
    tokens: list[str]


@dataclass
class Encoding:
    """One text's token ids (special tokens included) and their character spans (empty when not asked for)."""

    ids: list[int]
    offsets: list[Span]
