"""Compressed copies of a language model: int8 dynamic quantisation and dropped layers, each checked against what
it must equal, and refused where it cannot apply."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from kdlens import io
from kdlens.subjects import LanguageModel, build_word_tokenizer
from kdlens.subjects.lm.compress import (
    compressed,
    decoder_layers,
    drop_layers,
    parameter_count,
    quantize_int8,
    weight_bytes,
    weights,
)

TEXTS = ["a is 3 . b is a plus 4 , so b is 7 .", "the answer is 7 ."]


def llama(layers: int = 4, tied: bool = False) -> LanguageModel:
    tok = build_word_tokenizer(TEXTS)
    torch.manual_seed(0)
    net = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                       tie_word_embeddings=tied, pad_token_id=tok.pad_token_id,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    return LanguageModel(net.eval(), tok, "toy")


def test_dropping_every_second_layer_equals_running_the_kept_blocks_and_generates_with_a_cache():
    lm = llama(4)
    small = drop_layers(lm)
    assert len(decoder_layers(small.model)) == 2 and small.model.config.num_hidden_layers == 2
    assert len(decoder_layers(lm.model)) == 4  # the original is left as it was
    full = lm.hidden_states(TEXTS[:1])[0].layers
    kept = small.hidden_states(TEXTS[:1])[0].layers
    assert list(kept) == ["embed", "layers.0", "layers.1"]
    torch.testing.assert_close(kept["embed"], full["embed"])
    # block 0 is the same block on the same input: its output is the original's layers.0
    torch.testing.assert_close(kept["layers.0"], full["layers.0"])
    greedy = small.generate(TEXTS[:1], max_new_tokens=4)  # the KV cache lines up with the renumbered blocks
    assert greedy == small.generate(TEXTS[:1], max_new_tokens=4, batch_size=1)


def test_keeping_chosen_layers_and_bad_indices():
    lm = llama(4)
    assert len(decoder_layers(drop_layers(lm, [0, 3]).model)) == 2
    for keep in ([], [3, 1], [0, 4], [-1], [0, 0]):
        with pytest.raises(ValueError, match="increasing block indices in 0..3"):
            drop_layers(lm, keep)


def test_int8_quantisation_stays_close_to_the_float_model_and_changes_its_digest():
    lm = llama(2)
    q = quantize_int8(lm)
    a, b = lm.score(TEXTS, [" x"] * 2), q.score(TEXTS, [" x"] * 2)
    for s, t in zip(a, b, strict=True):
        assert abs(s.total - t.total) < 0.05 * abs(s.total) + 0.05
    assert io.tensors_digest(weights(q.model)) != io.tensors_digest(weights(lm.model))
    assert any(t.dtype == torch.int8 for t in weights(q.model).values())
    assert q.generate(TEXTS[:1], max_new_tokens=3) == q.generate(TEXTS[:1], max_new_tokens=3)


def test_quantising_counts_the_same_parameters_in_fewer_bytes():
    for tied in (False, True):
        lm = llama(2, tied=tied)
        q = quantize_int8(lm)
        assert parameter_count(q.model) == parameter_count(lm.model) == sum(
            t.numel() for t in {p.data_ptr(): p for p in lm.model.parameters()}.values())
        assert weight_bytes(q.model) < weight_bytes(lm.model)


def test_compressed_applies_both_in_order_and_nothing_is_the_model_itself():
    lm = llama(4)
    assert compressed(lm) is lm
    both = compressed(lm, "int8_dynamic", "every_second")
    assert len(decoder_layers(both.model)) == 2 and any(t.dtype == torch.int8 for t in weights(both.model).values())
    with pytest.raises(ValueError, match="int8_dynamic"):
        compressed(lm, "int4")


def test_compress_in_a_source_is_refused_for_classifiers_and_needs_cpu_to_quantise(tmp_path):
    from kdlens.subjects.sources import Compression, ModelSource, check_sources, load_models

    with pytest.raises(ValueError, match="compress needs quantize"):
        Compression()
    source = ModelSource(architecture="torch.nn:Linear", kwargs={"in_features": 2, "out_features": 2},
                         compress={"quantize": "int8_dynamic"}, trust_remote_code=True)
    with pytest.raises(ValueError, match="compression applies to language models only"):
        check_sources({"m": source}, "classifier")
    folder = tmp_path / "lm"
    lm = llama(2)
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    sources = {"a": ModelSource(checkpoint=str(folder)),
               "b": ModelSource(checkpoint=str(folder), compress={"quantize": "int8_dynamic"})}
    models = load_models(sources, "lm")
    assert [m.name for m in models.values()] == ["a", "b"]
    assert models["a"].model is not models["b"].model
    with pytest.raises(ValueError, match="Expected device cpu with compress.quantize"):
        load_models(sources, "lm", device="cuda")
