"""CKA between language models with different tokenizers, per word through character offsets."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from kdlens import measures as M
from kdlens.probes.lm_representations import cka_figures, layer_cka, layer_names, word_states
from kdlens.subjects import SPECIAL_TOKEN_IDS, LanguageModel, build_word_tokenizer, word_spans

TEXTS = ["a is 3 . b is a plus 4 , so b is 7 .", "the answer is 7 .", "mary went to the kitchen ."]


def word_lm(seed: int = 0, layers: int = 2) -> LanguageModel:
    tok = build_word_tokenizer(TEXTS)
    torch.manual_seed(seed)
    net = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                                       **SPECIAL_TOKEN_IDS))
    return LanguageModel(net, tok)


def char_lm(seed: int = 1, texts: list[str] = TEXTS, name: str = "model") -> LanguageModel:
    """A character-level Qwen2 (every word spans several tokens) over the characters of ``texts``."""
    chars = sorted(set("".join(texts)))
    vocab = {c: i for i, c in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *chars])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                  eos_token="<eos>")
    torch.manual_seed(seed)
    net = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                       pad_token_id=0, bos_token_id=2, eos_token_id=3))
    return LanguageModel(net, tok, name)


def test_one_row_per_word_whatever_the_tokenizer():
    n_words = sum(len(word_spans(t)) for t in TEXTS)
    for lm in (word_lm(), char_lm()):
        states = word_states(lm, TEXTS)
        assert list(states)[0] == "embed" and all(s.shape == (n_words, 16) for s in states.values())


def test_a_model_against_itself_is_one_on_the_diagonal_and_equals_the_measure():
    lm = word_lm()
    result = layer_cka(lm, lm, TEXTS)
    cka = torch.tensor(result["cka"])
    assert torch.allclose(cka.diagonal(), torch.ones(len(cka)), atol=1e-9)
    assert result["cka_mean_best"] == pytest.approx(1.0)
    feats = word_states(lm, TEXTS)
    assert cka[0, 1] == pytest.approx(M.linear_cka(feats["embed"], feats["layers.0"]))


def test_models_with_different_tokenizers_compare():
    result = layer_cka(word_lm(layers=2), char_lm(), TEXTS)
    assert len(result["teacher_layers"]) == 3 and len(result["student_layers"]) == 2
    assert all(0 <= v <= 1 + 1e-9 for row in result["cka"] for v in row)
    assert set(result["best_teacher_layer"]) == set(result["student_layers"])


@pytest.mark.parametrize("texts, message", [([], "at least one text"), (["   "], "at least one word")])
def test_bad_texts(texts, message):
    with pytest.raises(ValueError, match=message):
        word_states(word_lm(), texts)


def test_words_pooled_in_runs_of_batches_and_joined_give_exactly_the_one_pass_figures():
    teacher, student = word_lm(layers=2), char_lm()
    texts = [*TEXTS, "the answer is 3 .", "mary is in the kitchen , so b is 4 .", "a is 7 ."]
    one_pass = {name: word_states(lm, texts, 2) for name, lm in (("t", teacher), ("s", student))}
    runs = [(0, 4), (4, 6)]  # as two shards would: each on a batch boundary, read in batches of 2
    joined = {name: {layer: torch.cat([word_states(lm, texts[lo:hi], 2, start=lo)[layer] for lo, hi in runs])
                     for layer in layer_names(lm, texts[0])} for name, lm in (("t", teacher), ("s", student))}
    for name in one_pass:
        assert list(joined[name]) == list(one_pass[name])
        assert all(torch.equal(joined[name][k], v) for k, v in one_pass[name].items())  # bit for bit
    figures = cka_figures(joined["t"], joined["s"])
    assert figures == layer_cka(teacher, student, texts, batch_size=2)
    assert torch.equal(torch.tensor(figures["cka"], dtype=torch.float64), M.cka_matrix(one_pass["t"], one_pass["s"]))
    assert figures["n_words"] == sum(len(word_spans(t)) for t in texts)
    assert figures["teacher_layers"] == ["embed", "layers.0", "layers.1"]


def test_a_wordless_text_is_named_by_its_index_among_all_texts():
    with pytest.raises(ValueError, match=r"texts\[6\]"):
        word_states(word_lm(), ["a is 3 .", "  "], start=5)


@pytest.mark.parametrize("texts, batch_size, message", [
    (["a"], 16, "at least 2 words in all, but got 1"), ([], 16, "at least one text"), (TEXTS, 0, "batch_size")])
def test_bad_layer_cka_input(texts, batch_size, message):
    with pytest.raises(ValueError, match=message):
        layer_cka(word_lm(), char_lm(), texts, batch_size=batch_size)
