"""Layer-by-layer similarity of two language models that may not share a tokenizer.

Both models read the same texts; each one's hidden states are averaged over the tokens that overlap each
whitespace-separated word (character offsets, :func:`kdlens.subjects.pool_by_spans`), so every model gives one row
per word whatever its tokenizer; linear CKA then compares every teacher layer with every student layer over all
words of all texts.

Runs of texts can be pooled apart (other shards, other processes: :func:`word_states`, in the same batches as one
pass would read them), their per-word features joined in order and compared once by :func:`cka_figures`, with the
very figures of one pass; :func:`layer_cka` does all of it for one student on a list of texts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdlens import measures as M
from kdlens.subjects import LanguageModel, pool_by_spans, word_spans
from kdlens.validation import check_int, fail


def word_states(model: LanguageModel, texts: Sequence[str], batch_size: int = 16,
                start: int = 0) -> dict[str, torch.Tensor]:
    """Every layer's hidden states averaged per word: layer name -> (total words in ``texts``, d) float64.
    ``start``: the index of ``texts[0]`` among all the texts, for error messages."""
    texts = list(texts)
    if not texts:
        fail("texts", "at least one text", "none")
    layers: dict[str, list[torch.Tensor]] = {}
    for i, (text, states) in enumerate(zip(texts, model.hidden_states(texts, batch_size), strict=True)):
        spans = word_spans(text)
        if not spans:
            fail(f"texts[{start + i}]", "a text with at least one word", repr(text))
        for name, hidden in states.layers.items():
            layers.setdefault(name, []).append(pool_by_spans(hidden.double(), states.offsets, spans))  # (words, d)
    return {name: torch.cat(parts) for name, parts in layers.items()}


def layer_names(model: LanguageModel, text: str) -> list[str]:
    """The names :func:`word_states` gives ``model``'s layers ("embed", "layers.0", ...), read from one forward
    pass on ``text``: what labels features saved as tensors alone (a stage's shard states)."""
    return list(model.hidden_states([text], batch_size=1)[0].layers)


def cka_figures(feats_t: dict[str, torch.Tensor], feats_s: dict[str, torch.Tensor]) -> dict:
    """:func:`layer_cka`'s figures from every word's features (teacher and student, layer -> (words, d), as
    :func:`word_states` gives them, or joined from runs of texts pooled apart); an error when they hold fewer than 2
    words in all."""
    n = next(iter(feats_t.values())).shape[0]
    if n < 2:
        fail("texts", "at least 2 words in all", f"{n}", "CKA compares how examples relate: give more text.")
    cka = M.cka_matrix(feats_t, feats_s)  # (teacher layers, student layers) float64
    best, where = cka.max(dim=0)  # over teacher layers: (student layers,)
    teacher_layers, student_layers = list(feats_t), list(feats_s)
    return {"teacher_layers": teacher_layers, "student_layers": student_layers, "cka": cka.tolist(),
            "best_teacher_layer": {s: teacher_layers[int(i)] for s, i in zip(student_layers, where, strict=True)},
            "best_cka": {s: float(v) for s, v in zip(student_layers, best, strict=True)},
            "cka_mean_best": float(best.mean()), "n_words": n}


def layer_cka(teacher: LanguageModel, student: LanguageModel, texts: Sequence[str], batch_size: int = 16) -> dict:
    """Linear CKA between every teacher layer and every student layer on the words of ``texts``: each model reads
    them in batches of ``batch_size``, and :func:`kdlens.measures.cka_matrix` compares the pooled words at once.

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
    batch_size = check_int(batch_size, "batch_size", 1)
    return cka_figures(word_states(teacher, texts, batch_size), word_states(student, texts, batch_size))
