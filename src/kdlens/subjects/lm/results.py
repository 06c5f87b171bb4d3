"""What the :class:`~kdlens.subjects.lm.LanguageModel` operations return: per-token numbers with character spans."""

from __future__ import annotations

from dataclasses import dataclass

import torch

Span = tuple[int, int]


@dataclass
class ContinuationScore:
    """Log-probabilities of a continuation's tokens given its context (natural log, nats).

    ``token_logprobs`` (k,) float32; ``tokens`` the k token strings; ``offsets`` their (start, end) character spans
    in the continuation string; ``total`` their sum (accumulated in float64); ``mean`` the sum over k.
    """

    token_logprobs: torch.Tensor
    tokens: list[str]
    offsets: list[Span]
    total: float
    mean: float


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
