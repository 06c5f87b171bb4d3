"""One decoder block's output, read (the forward stopped after it) and edited (every forward pass, generation with its
KV cache included), with the hooks always removed."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from kdlens.subjects.lm import LanguageModel
from kdlens.subjects.lm.layers import decoder_blocks, edit_block, run_to_block
from kdlens.subjects.word_tokenizer import SPECIAL_TOKEN_IDS, build_word_tokenizer

CORPUS = ["mary went to the garden .", "john went to the kitchen .", "where is mary ? mary is in the garden .",
          "sandra picked up the apple ."]
TEXTS = ["where is mary ? mary is in the garden .", "john went", "sandra picked up the apple .", "mary"]


def llama(layers: int = 3, dtype: torch.dtype = torch.float32) -> LanguageModel:
    tok = build_word_tokenizer(CORPUS)
    torch.manual_seed(0)
    net = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=64, **SPECIAL_TOKEN_IDS))
    return LanguageModel(net.to(dtype).eval(), tok, "tiny")


@pytest.fixture(scope="module")
def lm():
    return llama()


def hook_count(lm) -> int:
    """Forward hooks on the blocks (transformers installs its own, for good, at the first ``output_hidden_states``)."""
    return sum(len(block._forward_hooks) for block in decoder_blocks(lm.model))


class TupleBlock(nn.Module):
    """A block in the older transformers style: (hidden, extra) out."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return self.linear(x), "extra"


class TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=2)
        self.layers = nn.ModuleList([TupleBlock(), TupleBlock()])
        self.seen = []

    def forward(self, x):
        for layer in self.layers:
            x, extra = layer(x)
            self.seen.append(extra)
        return x


# ---- finding the blocks --------------------------------------------------------------------------------------------


def test_the_blocks_are_found_in_llama_and_gpt2_and_their_absence_is_named(lm):
    assert decoder_blocks(lm.model) is lm.model.model.layers
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=16, n_embd=8, n_layer=2, n_head=2))
    assert decoder_blocks(gpt2) is gpt2.transformer.h
    flat = nn.Linear(2, 2)
    flat.config = SimpleNamespace(num_hidden_layers=3)
    with pytest.raises(ValueError, match=r"Expected `model` to be a decoder with an nn.ModuleList of "
                                         r"config.num_hidden_layers \(3\) blocks .*, but got a Linear without one"):
        decoder_blocks(flat)


# ---- reading a block -----------------------------------------------------------------------------------------------


def test_block_outputs_equal_hidden_states_in_padded_batches(lm):
    full = lm.hidden_states(TEXTS, batch_size=2)
    for block in (0, 1):
        found = lm.block_outputs(TEXTS, block, batch_size=2)
        for states, reference in zip(found, full, strict=True):
            assert list(states.layers) == [f"layers.{block}"]
            h = states.layers[f"layers.{block}"]
            assert h.dtype == torch.float32 and h.device.type == "cpu"
            torch.testing.assert_close(h, reference.layers[f"layers.{block}"], rtol=0, atol=1e-6)
            assert states.offsets == reference.offsets and states.tokens == reference.tokens
    alone = lm.block_outputs(TEXTS[1:2], 1)[0].layers["layers.1"]  # no padding
    torch.testing.assert_close(lm.block_outputs(TEXTS, 1, batch_size=4)[1].layers["layers.1"], alone, rtol=0,
                               atol=1e-5)


def test_the_last_block_is_read_before_the_final_norm(lm):
    last = lm.block_outputs(TEXTS, 2, batch_size=2)
    full = lm.hidden_states(TEXTS, batch_size=2)
    for states, reference in zip(last, full, strict=True):
        with torch.no_grad():
            normed = lm.model.model.norm(states.layers["layers.2"])
        torch.testing.assert_close(normed, reference.layers["layers.2"], rtol=0, atol=1e-5)
        assert not torch.allclose(states.layers["layers.2"], reference.layers["layers.2"], atol=1e-3)


def test_reading_a_middle_block_runs_neither_later_blocks_nor_the_head(lm):
    calls, hooks = [], hook_count(lm)
    modules = {"block 0": lm.model.model.layers[0], "block 1": lm.model.model.layers[1],
               "block 2": lm.model.model.layers[2], "norm": lm.model.model.norm, "head": lm.model.lm_head}
    handles = [m.register_forward_hook(lambda *_, name=name: calls.append(name)) for name, m in modules.items()]
    try:
        lm.block_outputs(TEXTS, 1, batch_size=2)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["block 0", "block 1"] * 2  # two batches
    assert hook_count(lm) == hooks


# ---- editing a block -----------------------------------------------------------------------------------------------


def test_an_identity_edit_changes_no_score(lm):
    contexts, continuations = ["mary went", "where is"], [" to the garden .", " the apple ?"]
    before = lm.score(contexts, continuations)
    with lm.editing(1, lambda hidden: hidden) as edited:
        assert edited is lm
        during = lm.score(contexts, continuations)
    for a, b in zip(before, during, strict=True):
        assert torch.equal(a.token_logprobs, b.token_logprobs)


def test_adding_a_vector_shows_in_every_read_and_equals_an_independent_hook(lm):
    vector = torch.linspace(-1, 1, 32)
    lm.hidden_states(TEXTS[:1])  # installs transformers' own hidden-state hooks first: the edit must still run ahead
    original = lm.block_outputs(TEXTS, 0, batch_size=2)
    plain_logits = lm.token_logits(TEXTS, batch_size=2)
    with lm.editing(0, lambda hidden: hidden + vector):
        edited = lm.block_outputs(TEXTS, 0, batch_size=2)
        reported = lm.hidden_states(TEXTS, batch_size=2)
        logits = lm.token_logits(TEXTS, batch_size=2)
    handle = lm.model.model.layers[0].register_forward_hook(lambda module, args, output: output + vector)
    try:
        reference = lm.token_logits(TEXTS, batch_size=2)
    finally:
        handle.remove()
    for o, e, r, lg, p, ref in zip(original, edited, reported, logits, plain_logits, reference, strict=True):
        torch.testing.assert_close(e.layers["layers.0"], o.layers["layers.0"] + vector, rtol=0, atol=1e-6)
        torch.testing.assert_close(r.layers["layers.0"], e.layers["layers.0"], rtol=0, atol=1e-6)
        torch.testing.assert_close(lg.logits, ref.logits, rtol=0, atol=1e-5)
        assert not torch.allclose(lg.logits, p.logits, atol=1e-3)


def test_an_edit_steers_greedy_generation_step_by_step_and_is_gone_afterwards(lm):
    prompts, hooks = ["mary went", "where is mary ?"], hook_count(lm)
    plain = lm.generate(prompts, max_new_tokens=6)
    shapes = []
    push = 50 * torch.randn(32, generator=torch.Generator().manual_seed(3))

    def steer(hidden):
        shapes.append(tuple(hidden.shape))
        return hidden + push

    with lm.editing(1, steer):
        steered = lm.generate(prompts, max_new_tokens=6)
    assert steered != plain
    assert shapes[0][:2] == (2, 5) and set(shapes[1:]) == {(2, 1, 32)}  # the prompt, then one token a step (KV cache)
    assert lm.generate(prompts, max_new_tokens=6) == plain and hook_count(lm) == hooks


def test_an_edit_that_raises_or_returns_the_wrong_shape_leaves_no_hook(lm):
    before, hooks = lm.score(["mary"], [" went"])[0].token_logprobs, hook_count(lm)

    def broken(hidden):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), lm.editing(0, broken):
        lm.score(["mary"], [" went"])
    with pytest.raises(ValueError, match=r"Expected `edit` to be a function returning the hidden state's shape "
                                         r"\(1, 3, 32\), but got shape \(1, 3\)"), lm.editing(0, lambda h: h[..., 0]):
        lm.score(["mary"], [" went"])
    with pytest.raises(TypeError, match="a function returning a tensor, but got a float"), \
            lm.editing(0, lambda h: 1.0):
        lm.score(["mary"], [" went"])
    assert hook_count(lm) == hooks
    assert torch.equal(lm.score(["mary"], [" went"])[0].token_logprobs, before)


def test_an_edit_is_cast_back_to_the_models_dtype():
    lm = llama(2, torch.bfloat16)
    seen = []

    def edit(hidden):
        seen.append(hidden.dtype)
        return hidden.float() + 1.0

    original = lm.block_outputs(["mary went"], 0)[0].layers["layers.0"]
    with lm.editing(0, edit):
        edited = lm.block_outputs(["mary went"], 0)[0].layers["layers.0"]
        lm.score(["mary"], [" went"])
    assert set(seen) == {torch.bfloat16} and edited.dtype == torch.float32
    torch.testing.assert_close(edited, (original.bfloat16() + 1.0).float(), rtol=0, atol=0)


def test_blocks_that_return_tuples_are_read_and_edited():
    torch.manual_seed(0)
    model, x = TupleModel(), torch.randn(2, 3, 4)
    with torch.no_grad():
        middle = model.layers[0](x)[0]
        assert torch.equal(run_to_block(model, 0, lambda: model(x)), middle)
        assert model.seen == []  # stopped inside block 0's call, before the model's loop went on
        with edit_block(model, 0, torch.zeros_like):
            out = model(x)
        assert torch.equal(out, model.layers[1](torch.zeros(2, 3, 4))[0]) and model.seen == ["extra", "extra"]
    assert all(not block._forward_hooks for block in model.layers)


# ---- bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda lm: lm.block_outputs(TEXTS, 3), ValueError,
     r"Expected `block` to be a block index of tiny from 0 to 2 \(its layers: layers.0, layers.1, layers.2\), "
     r"but got 3"),
    (lambda lm: lm.block_outputs(TEXTS, True), ValueError, "`block` to be a block index"),
    (lambda lm: lm.block_outputs(TEXTS, "layers.1"), ValueError, "but got 'layers.1'"),
    (lambda lm: lm.block_outputs("mary", 0), TypeError, "`texts` to be a list of str"),
    (lambda lm: lm.block_outputs([], 0), ValueError, "`texts` to be a non-empty list of str"),
    (lambda lm: lm.block_outputs(TEXTS, 0, batch_size=0), ValueError, "`batch_size` to be a positive integer"),
    (lambda lm: lm.block_outputs(["the " * 70], 0), ValueError, r"`texts\[0\]` to be at most 64 tokens"),
    (lambda lm: lm.editing(-1, abs).__enter__(), ValueError, r"`block` to be a block index of tiny from 0 to 2"),
    (lambda lm: lm.editing(0, "steer").__enter__(), TypeError, "`edit` to be a function"),
    (lambda lm: edit_block(lm.model, 5, abs).__enter__(), ValueError,
     r"`index` to be a block index of the model from 0 to 2"),
])
def test_bad_inputs_raise_with_the_fix(lm, call, error, match):
    hooks = hook_count(lm)
    with pytest.raises(error, match=match):
        call(lm)
    assert hook_count(lm) == hooks
