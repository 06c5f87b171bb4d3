"""Paired activations for a crosscoder (issue 18, item 1): token pairing for models that share a vocabulary (special
tokens left out), per-word pairing across tokenizers, the default half-depth layer, and a wrong layer named."""

import pytest
import torch

from kdlens.probes.crosscoder import layer_name, paired_activations
from kdlens.subjects.lm.spans import word_spans
from tests.probes.test_lm_representations import TEXTS, char_lm, word_lm


def test_models_that_share_a_vocabulary_are_paired_token_by_token():
    first, second = word_lm(0, layers=4), word_lm(1, layers=2)
    found = paired_activations(first, second, TEXTS[:3], batch_size=2)
    assert found["pairing"] == "token" and found["layers"] == ["layers.1", "layers.0"]  # half depth of 4 and of 2
    rows, owners = [], []
    for i, (a, b) in enumerate(zip(first.hidden_states(TEXTS[:3], 2), second.hidden_states(TEXTS[:3], 2), strict=True)):
        kept = [t for t, (s, e) in enumerate(a.offsets) if e > s]  # the word tokenizer's BOS has no text
        assert len(kept) == len(a.offsets) - 1
        rows.append((a.layers["layers.1"][kept], b.layers["layers.0"][kept]))
        owners += [i] * len(kept)
    assert torch.equal(found["first"], torch.cat([r[0] for r in rows]))
    assert torch.equal(found["second"], torch.cat([r[1] for r in rows]))
    assert found["text"].tolist() == owners and found["first"].dtype == torch.float32
    kept_all = paired_activations(first, second, TEXTS[:3], keep_special=True)
    assert kept_all["first"].shape[0] == found["first"].shape[0] + 3  # one BOS per text


def test_models_with_different_tokenizers_are_paired_per_word():
    first, second = word_lm(0), char_lm(1)
    found = paired_activations(first, second, TEXTS[:4], layers=(1, 0))
    words = sum(len(word_spans(t)) - 1 for t in TEXTS[:4])  # each text's first word left out (its attention sink)
    assert found["pairing"] == "word" and found["first"].shape == (words, 16) and found["second"].shape == (words, 16)
    (states,) = second.block_outputs(TEXTS[:1], 0)  # its last block: the block's output, before the final norm
    chars = [t for t, (s, e) in enumerate(states.offsets) if s >= word_spans(TEXTS[0])[1][0]
             and e <= word_spans(TEXTS[0])[1][1] and e > s]  # the second word's characters
    assert torch.allclose(found["second"][0], states.layers["layers.0"][chars].mean(0), atol=1e-6)
    (normed,) = second.hidden_states(TEXTS[:1])  # transformers' last hidden state is after the norm: not this
    assert not torch.allclose(found["second"][0], normed.layers["layers.0"][chars].mean(0), atol=1e-3)


def test_a_layer_outside_the_model_lists_its_layers():
    with pytest.raises(ValueError, match=r"Expected `layer` to be a block index of .* from 0 to 1 \(its layers: "
                                         r"layers.0, layers.1\), but got 5"):
        layer_name(word_lm(), 5)
    with pytest.raises(ValueError, match="at least one text"):
        paired_activations(word_lm(), word_lm(1), [])


def test_each_row_carries_its_token_index_and_character_span():
    first, second = word_lm(0, layers=4), word_lm(1, layers=2)
    found = paired_activations(first, second, TEXTS[:3], batch_size=2)
    n = found["first"].shape[0]
    assert found["position"].shape == (n,) and found["span"].shape == (n, 2)
    assert found["position"].dtype == torch.long and found["span"].dtype == torch.long
    for i, text in enumerate(TEXTS[:3]):
        mine = found["text"] == i
        (states,) = first.hidden_states([text])
        kept = [t for t, (s, e) in enumerate(states.offsets) if e > s and t > 0]
        assert found["position"][mine].tolist() == kept
        assert [tuple(s) for s in found["span"][mine].tolist()] == [states.offsets[t] for t in kept]
        assert [text[s:e] for s, e in found["span"][mine].tolist()] == text.split()  # one token per word here
    kept_all = paired_activations(first, second, TEXTS[:1], keep_special=True)
    assert kept_all["position"].tolist() == list(range(len(TEXTS[0].split()) + 1))  # the BOS is token 0
    assert kept_all["span"][0].tolist() == [0, 0]


def test_word_pairing_rows_carry_the_words_index_and_span():
    found = paired_activations(word_lm(0), char_lm(1), TEXTS[:3], layers=(0, 0))
    for i, text in enumerate(TEXTS[:3]):
        mine = found["text"] == i
        assert found["position"][mine].tolist() == list(range(1, len(word_spans(text))))  # the first word left out
        assert [tuple(s) for s in found["span"][mine].tolist()] == word_spans(text)[1:]
    kept_all = paired_activations(word_lm(0), char_lm(1), TEXTS[:1], layers=(0, 0), keep_special=True)
    assert kept_all["position"].tolist() == list(range(len(word_spans(TEXTS[0]))))


def test_a_middle_block_is_read_without_running_the_blocks_after_it():
    first, second = word_lm(0, layers=4), word_lm(1, layers=4)
    calls = []
    handles = [lm.model.model.layers[i].register_forward_hook(lambda *_, i=i: calls.append(i))
               for lm in (first, second) for i in range(4)]
    try:
        found = paired_activations(first, second, TEXTS[:3], batch_size=3)
    finally:
        for handle in handles:
            handle.remove()
    assert found["layers"] == ["layers.1", "layers.1"] and calls == [0, 1, 0, 1]  # one batch per model
