"""Scoring and token logits through the model's body and its output head, a chunk of positions at a time: the same
numbers as the full logits' log-softmax, for plain heads and for the architectures that scale or soft-cap their
logits, and the exact fallback for a model that does something else between body and logits.

Tiny random models built from configs; nothing is downloaded.
"""

import pytest
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from kdlens.subjects.lm import LanguageModel
from kdlens.subjects.lm.head import output_head, reproduces_logits
from kdlens.subjects.word_tokenizer import SPECIAL_TOKEN_IDS, build_word_tokenizer

TOKENIZER = build_word_tokenizer(["mary went to the garden .", "where is the apple ? the apple is in the kitchen ."])
SIZES = dict(vocab_size=len(TOKENIZER), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **SPECIAL_TOKEN_IDS)
# (config class, model class, what the architecture does between body and logits); soft-caps small enough to bend
# the random models' logits
ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(head_dim=8, final_logit_softcapping=0.5)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(head_dim=8, final_logit_softcapping=0.5)),
    "granite": ("GraniteConfig", "GraniteForCausalLM", dict(logits_scaling=4.0)),
    "cohere": ("CohereConfig", "CohereForCausalLM", dict(logit_scale=3.0)),
}
CONTEXTS = ["mary went", "where is the apple ?", "mary"]
CONTINUATIONS = [" to the garden .", " the apple is in the kitchen .", " went"]


def build(name: str) -> LanguageModel:
    config, model, extra = ARCHITECTURES[name]
    torch.manual_seed(0)
    lm = LanguageModel(getattr(transformers, model)(getattr(transformers, config)(**SIZES, **extra)).eval(),
                       TOKENIZER, name)
    lm.logits_chunk_mb = 2 * 4 * lm.vocab_size / 2**20  # two positions per chunk
    return lm


def full_logprobs(model, context: str, continuation: str, k: int) -> torch.Tensor:
    """The last k tokens' log-probabilities from the model's full (1, T, V) logits."""
    ids = TOKENIZER(context + continuation)["input_ids"]
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)  # (T, V)
    return torch.stack([logprobs[t - 1, ids[t]] for t in range(len(ids) - k, len(ids))])


def head_rows(lm):
    """The number of positions of each output-head call."""
    rows = []
    handle = lm.model.get_output_embeddings().register_forward_hook(
        lambda module, inputs, output: rows.append(output.shape[:-1].numel()))
    return rows, handle


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_chunked_scoring_equals_the_full_logits_log_softmax(name):
    lm = build(name)
    lm.score(CONTEXTS[:1], CONTINUATIONS[:1])  # the head's one-off check on a probe
    rows, handle = head_rows(lm)
    try:
        scores = lm.score(CONTEXTS, CONTINUATIONS, batch_size=3)
    finally:
        handle.remove()
    assert len(rows) > 2 and max(rows) == 2 and sum(rows) == sum(len(s.tokens) for s in scores)  # never (B, T, V)
    for context, continuation, score in zip(CONTEXTS, CONTINUATIONS, scores, strict=True):
        expected = full_logprobs(lm.model, context, continuation, len(score.tokens))
        torch.testing.assert_close(score.token_logprobs, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["gemma2", "granite", "cohere"])
def test_the_architectures_step_between_head_and_logits_is_needed_and_reproduced(name):
    lm = build(name)
    ids = torch.tensor([TOKENIZER("where is the apple ? the apple is in the kitchen .")["input_ids"]])
    with torch.no_grad():
        hidden, logits = lm.model.base_model(ids).last_hidden_state, lm.model(ids).logits
        assert not reproduces_logits(lm.model.get_output_embeddings(), hidden, logits)  # the plain head is wrong
        assert reproduces_logits(output_head(lm.model), hidden, logits)


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_chunked_token_logits_equal_the_models_and_each_is_its_own_tensor(name):
    lm = build(name)
    texts = ["where is the apple ? the apple is in the kitchen .", "mary"]
    out = lm.token_logits(texts, batch_size=2)
    for text, result in zip(texts, out, strict=True):
        with torch.no_grad():
            expected = lm.model(torch.tensor([TOKENIZER(text)["input_ids"]])).logits[0]
        torch.testing.assert_close(result.logits, expected, rtol=0, atol=1e-5)
        assert result.logits.untyped_storage().nbytes() == result.logits.numel() * 4  # not a view of the batch


class ScaledLlama(LlamaForCausalLM):
    """A head kdlens does not know: the logits tripled after the output embedding."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = 3 * out.logits
        return out


def test_a_model_with_an_unknown_step_after_its_head_is_scored_from_its_own_logits():
    torch.manual_seed(0)
    lm = LanguageModel(ScaledLlama(LlamaConfig(**SIZES)).eval(), TOKENIZER, "scaled")
    lm.logits_chunk_mb = 2 * 4 * lm.vocab_size / 2**20
    scores = lm.score(CONTEXTS, CONTINUATIONS, batch_size=3)
    assert lm._head_check[2] is False  # the probe caught it
    for context, continuation, score in zip(CONTEXTS, CONTINUATIONS, scores, strict=True):
        expected = full_logprobs(lm.model, context, continuation, len(score.tokens))
        torch.testing.assert_close(score.token_logprobs, expected, rtol=0, atol=1e-6)
        unscaled = full_logprobs(LlamaForCausalLM.forward.__get__(lm.model), context, continuation,
                                 len(score.tokens))
        assert not torch.allclose(score.token_logprobs, unscaled, atol=1e-3)  # the plain head would be wrong
    logits = lm.token_logits(CONTEXTS[:1])[0].logits
    with torch.no_grad():
        torch.testing.assert_close(logits, lm.model(torch.tensor([TOKENIZER(CONTEXTS[0])["input_ids"]])).logits[0])


def test_a_new_model_is_checked_again_and_the_chunk_size_is_validated():
    lm = build("llama")
    lm.score(CONTEXTS[:1], CONTINUATIONS[:1])
    assert lm._head_check[2] is True
    torch.manual_seed(0)
    lm.model = ScaledLlama(LlamaConfig(**SIZES)).eval()
    score = lm.score(CONTEXTS[:1], CONTINUATIONS[:1])[0]
    assert lm._head_check[2] is False
    expected = full_logprobs(lm.model, CONTEXTS[0], CONTINUATIONS[0], len(score.tokens))
    torch.testing.assert_close(score.token_logprobs, expected, rtol=0, atol=1e-6)
    for bad, error in ((0, ValueError), ("64", TypeError)):
        with pytest.raises(error, match="Expected `logits_chunk_mb` to be a positive"):
            lm.logits_chunk_mb = bad
