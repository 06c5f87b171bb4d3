"""Paired activations for a crosscoder (:mod:`kdlens.distill.crosscoder`): two models' residual-stream activations
at one layer each, on the same text, row for row.

The residual stream after block ``i`` is Hugging Face's hidden state ``layers.i`` (default: half depth, block
``n_layers // 2 - 1``, the last block of the first half). Models that share a vocabulary are paired token by token;
special tokens (BOS, padding, end-of-turn and the other ids the tokenizer calls special, chat-template markers
among them), tokens without text and each text's first token are left out unless ``keep_special``. The first token
is where a model sinks its attention: with no BOS before it (SmolLM2's tokenizer adds none) it plays the BOS's part,
its residual norm some 160x the median token's on SmolLM2 at block 14, and a few such rows would own the crosscoder's
scale and loss. Models with different tokenizers are paired per word (:func:`kdlens.subjects.lm.spans.word_spans`:
each word's tokens averaged through character offsets; the first word left out likewise), so both sides always
hold the same number of rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdlens import validation as V
from kdlens.subjects.lm.layers import check_block
from kdlens.subjects.lm.spans import pool_by_spans, word_spans


def layer_name(model, layer: int | None = None) -> str:
    """The hidden-state name of ``model``'s residual stream after block ``layer`` (default: half depth); an error
    listing the real ones otherwise."""
    if layer is None:
        layer = max(int(model.model.config.num_hidden_layers) // 2 - 1, 0)
    return f"layers.{check_block(model.model, layer, 'layer', model.name)}"


def pairing_of(first, second) -> str:
    """How two models' rows are paired: ``"token"`` when their tokenizers share a vocabulary, else ``"word"``."""
    return "token" if first.tokenizer.get_vocab() == second.tokenizer.get_vocab() else "word"


def paired_activations(first, second, texts: Sequence[str], layers: tuple[int | None, int | None] = (None, None),
                       batch_size: int = 16, keep_special: bool = False) -> dict:
    """Both models' activations at their layers on ``texts``, row i of each the same token (or word).

    Parameters
    ----------
    first, second : :class:`~kdlens.subjects.LanguageModel` s (their widths may differ)
    texts : the texts both models read
    layers : each model's block (None: half depth; :func:`layer_name`)
    keep_special : keep special tokens, tokens without text and each text's first token (or word)

    Returns
    -------
    dict: ``"first"`` (N, d_1) and ``"second"`` (N, d_2) float32; ``"text"`` (N,) int64, the text each row comes
    from; ``"position"`` (N,) int64, the row's token index in its text (word pairing: the word's index);
    ``"span"`` (N, 2) int64, the row's (start, end) characters in its text (the token's, or the word's);
    ``"pairing"``: ``"token"`` or ``"word"``; ``"layers"``: the two hidden-state names

    Each model runs only up to its block (:meth:`~kdlens.subjects.LanguageModel.block_outputs`). At a model's
    last block that is the block's own output, before the final norm (transformers' last hidden state is after
    it): the stream an edit of the block (:meth:`~kdlens.subjects.LanguageModel.editing`) changes, so a
    reconstruction spliced back in is in the units it was read in.
    """
    texts = list(texts)
    if not texts:
        V.fail("texts", "at least one text", "none")
    names = (layer_name(first, layers[0]), layer_name(second, layers[1]))
    pairing = pairing_of(first, second)
    states = []  # per model, per text: HiddenStates holding its layer alone, the forward stopped after the block
    for model, name in zip((first, second), names, strict=True):
        states.append(model.block_outputs(texts, int(name.removeprefix("layers.")), batch_size))
    special = set(first.tokenizer.all_special_tokens)
    rows: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
    owners, positions, spans = [], [], []
    for i, (text, a, b) in enumerate(zip(texts, *states, strict=True)):
        if pairing == "token":
            if a.offsets != b.offsets:
                V.fail(f"texts[{i}]", "the same tokens under both models (they share a vocabulary)",
                       f"{len(a.offsets)} and {len(b.offsets)} tokens with other spans",
                       "Their tokenizers cut text differently: save both with the same tokenizer.json.")
            kept = [t for t, ((start, end), token) in enumerate(zip(a.offsets, a.tokens, strict=True))
                    if keep_special or (t > 0 and end > start and token not in special)]
            picked = [a.layers[names[0]][kept], b.layers[names[1]][kept]]
            where = [a.offsets[t] for t in kept]
        else:
            where = word_spans(text)[0 if keep_special else 1:]
            kept = list(range(0 if keep_special else 1, len(where) + (0 if keep_special else 1)))
            picked = [pool_by_spans(s.layers[n].double(), s.offsets, where).float()
                      for s, n in ((a, names[0]), (b, names[1]))]
        rows[0].append(picked[0])
        rows[1].append(picked[1])
        owners.append(torch.full((len(kept),), i, dtype=torch.long))
        positions.append(torch.tensor(kept, dtype=torch.long))
        spans.append(torch.tensor(where, dtype=torch.long).reshape(-1, 2))
    return {"first": torch.cat(rows[0]), "second": torch.cat(rows[1]), "text": torch.cat(owners),
            "position": torch.cat(positions), "span": torch.cat(spans), "pairing": pairing, "layers": list(names)}

