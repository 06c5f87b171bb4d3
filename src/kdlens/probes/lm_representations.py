"""Layer-by-layer similarity of two language models that may not share a tokenizer.

Both models read the same texts; each one's hidden states are averaged over the tokens that overlap each
whitespace-separated word (character offsets, :func:`kdlens.subjects.pool_by_spans`), so every model gives one row
per word whatever its tokenizer; linear CKA then compares every teacher layer with every student layer over all
words of all texts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdlens import measures as M
from kdlens.subjects import LanguageModel, pool_by_spans, word_spans
from kdlens.validation import fail


def word_states(model: LanguageModel, texts: Sequence[str], batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Every layer's hidden states averaged per word: layer name -> (total words in ``texts``, d) float64."""
    texts = list(texts)
    if not texts:
        fail("texts", "at least one text", "none")
    layers: dict[str, list[torch.Tensor]] = {}
    for i, (text, states) in enumerate(zip(texts, model.hidden_states(texts, batch_size), strict=True)):
        spans = word_spans(text)
        if not spans:
            fail(f"texts[{i}]", "a text with at least one word", repr(text))
        for name, hidden in states.layers.items():
            layers.setdefault(name, []).append(pool_by_spans(hidden.double(), states.offsets, spans))  # (words, d)
    return {name: torch.cat(parts) for name, parts in layers.items()}


def layer_cka(teacher: LanguageModel, student: LanguageModel, texts: Sequence[str], batch_size: int = 16) -> dict:
    """Linear CKA between every teacher layer and every student layer on the words of ``texts``.

    Returns
    -------
    dict (JSON-ready): ``teacher_layers``, ``student_layers``, ``cka`` ((teacher layers) x (student layers) nested
    lists), ``best_teacher_layer`` and ``best_cka`` per student layer, ``cka_mean_best`` (their mean, the audit's
    headline), and ``n_words``.

    Examples
    --------
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from kdlens.subjects import SPECIAL_TOKEN_IDS, build_word_tokenizer
    >>> texts = ["a is 3 . b is 5 .", "the answer is 8 ."]
    >>> tok = build_word_tokenizer(texts)
    >>> _ = torch.manual_seed(0)
    >>> net = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=8, intermediate_size=16,
    ...     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, **SPECIAL_TOKEN_IDS))
    >>> lm = LanguageModel(net, tok)
    >>> round(layer_cka(lm, lm, texts)["cka_mean_best"], 6)
    1.0
    """
    feats_t = word_states(teacher, texts, batch_size)
    feats_s = word_states(student, texts, batch_size)
    n = next(iter(feats_t.values())).shape[0]
    if n < 2:
        fail("texts", "at least 2 words in all", f"{n}", "CKA compares how examples relate: give more text.")
    cka = M.cka_matrix(feats_t, feats_s)  # (teacher layers, student layers) float64
    best, where = cka.max(dim=0)
    teacher_layers, student_layers = list(feats_t), list(feats_s)
    return {"teacher_layers": teacher_layers, "student_layers": student_layers, "cka": cka.tolist(),
            "best_teacher_layer": {s: teacher_layers[int(i)] for s, i in zip(student_layers, where, strict=True)},
            "best_cka": {s: float(v) for s, v in zip(student_layers, best, strict=True)},
            "cka_mean_best": float(best.mean()), "n_words": n}
