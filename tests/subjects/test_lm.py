"""The language-model subject: safe local loading, scoring, hidden states, generation, vocabulary checks.

Models are tiny random Llama / Qwen2 configs saved to a temporary folder and reloaded through the same code a user's
checkpoint goes through; nothing is downloaded.
"""

import shutil

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from kdlens.subjects.lm import LanguageModel, check_same_vocabulary, pool_by_spans, word_spans
from kdlens.subjects.word_tokenizer import SPECIAL_TOKEN_IDS, build_word_tokenizer

CORPUS = ["mary went to the garden .", "john went to the kitchen .", "where is mary ? mary is in the garden .",
          "sandra picked up the apple .", "where is the apple ? the apple is in the kitchen ."]
SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=32)


def save(model, tokenizer, directory):
    model.save_pretrained(directory)  # transformers 5 always writes model.safetensors
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    tok = build_word_tokenizer(CORPUS)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), **SPECIAL_TOKEN_IDS, **SIZES))
    return save(model, tok, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def lm(llama_dir):
    return LanguageModel.from_pretrained(llama_dir)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """Qwen2 with a byte-level BPE tokenizer that has no pad and no bos token (pads with eos)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    torch.manual_seed(1)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), eos_token_id=tok.eos_token_id, **SIZES))
    return LanguageModel.from_pretrained(save(model, tok, tmp_path_factory.mktemp("qwen2")))


def test_loading_gives_an_eval_model_named_after_its_folder(lm, llama_dir):
    assert not lm.model.training and lm.name == llama_dir.name and lm.max_positions == 32
    assert LanguageModel.from_pretrained(llama_dir, dtype="bfloat16").model.dtype == torch.bfloat16


def test_score_equals_a_hand_computation(lm):
    context, continuation = "where is mary ?", " mary is in the garden ."
    result = lm.score([context], [continuation])[0]
    ids = lm.tokenizer(context + continuation)["input_ids"]
    n_context = len(lm.tokenizer(context)["input_ids"])
    with torch.no_grad():
        logprobs = lm.model(torch.tensor([ids])).logits[0].log_softmax(-1)  # (T, V)
    expected = torch.stack([logprobs[t - 1, ids[t]] for t in range(n_context, len(ids))])
    torch.testing.assert_close(result.token_logprobs, expected, rtol=0, atol=1e-6)
    assert result.tokens == ["mary", "is", "in", "the", "garden", "."]
    assert result.total == pytest.approx(float(expected.double().sum()), abs=1e-5)
    assert result.mean == pytest.approx(result.total / 6)


def test_batched_scoring_equals_one_pair_at_a_time(lm):
    contexts = ["mary went", "where is the apple ?", "john", "sandra picked up the apple . where is"]
    continuations = [" to the garden .", " in the kitchen", " went to the kitchen . mary went to the garden .",
                     " sandra ?"]
    batched = lm.score(contexts, continuations, batch_size=3)
    for i, result in enumerate(batched):
        alone = lm.score([contexts[i]], [continuations[i]], batch_size=1)[0]
        torch.testing.assert_close(result.token_logprobs, alone.token_logprobs, rtol=0, atol=1e-5)
        assert result.tokens == alone.tokens and result.offsets == alone.offsets


def test_offsets_point_into_the_continuation_and_a_token_across_the_seam_is_the_continuations(lm):
    continuation = "  to the   garden ."
    result = lm.score(["mary went"], [continuation])[0]
    assert [continuation[s:e] for s, e in result.offsets] == result.tokens == ["to", "the", "garden", "."]
    split = lm.score(["mary we"], ["nt to"])[0]  # "went" straddles the seam
    assert split.tokens == ["went", "to"] and split.offsets == [(0, 2), (3, 5)]


def test_hidden_states_name_every_layer_and_drop_padding(lm):
    texts = ["mary went to the garden .", "john"]
    batched = lm.hidden_states(texts, batch_size=2)
    for text, states in zip(texts, batched, strict=True):
        n = len(lm.tokenizer(text)["input_ids"])
        assert list(states.layers) == ["embed", "layers.0", "layers.1"]
        assert all(h.shape == (n, 32) and h.dtype == torch.float32 for h in states.layers.values())
        assert len(states.offsets) == len(states.tokens) == n
        alone = lm.hidden_states([text])[0]
        for name, h in states.layers.items():
            torch.testing.assert_close(h, alone.layers[name], rtol=0, atol=1e-5)


def vocabulary_rows(lm):
    """Counts the rows the output head computes logits for (a real vocabulary makes each row costly)."""
    rows = []
    handle = lm.model.get_output_embeddings().register_forward_hook(
        lambda module, inputs, output: rows.append(output.shape[:-1].numel()))
    return rows, handle


def test_hidden_states_compute_no_vocabulary_logits_and_equal_the_full_models(lm):
    texts = ["mary went to the garden .", "john"]
    rows, handle = vocabulary_rows(lm)
    try:
        states = lm.hidden_states(texts, batch_size=2)
    finally:
        handle.remove()
    assert rows == []
    ids = lm.tokenizer(texts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full = lm.model(ids, output_hidden_states=True).hidden_states
    for name, h in zip(["embed", "layers.0", "layers.1"], full, strict=True):
        torch.testing.assert_close(states[0].layers[name], h[0], rtol=0, atol=1e-6)


def test_scoring_computes_logits_only_where_a_scored_token_is_predicted(lm):
    contexts, continuations = ["mary went to the garden . john went to the", "where is"], [" kitchen .", " mary ?"]
    lm.score(contexts[:1], continuations[:1])  # the output head's one-off check on a probe
    rows, handle = vocabulary_rows(lm)
    try:
        scores = lm.score(contexts, continuations, batch_size=2)
    finally:
        handle.remove()
    assert rows and sum(rows) == sum(len(s.tokens) for s in scores)  # one row per scored token, not every token


def test_pool_by_spans_gives_one_row_per_word_whatever_the_tokenizer(lm, qwen):
    text = "where is mary ? mary is in the garden ."
    spans = word_spans(text)
    pooled = []
    for model in (lm, qwen):
        states = model.hidden_states([text])[0]
        pooled.append(pool_by_spans(states.layers["layers.1"], states.offsets, spans))
    assert pooled[0].shape == pooled[1].shape == (len(spans), 32)
    states = torch.tensor([[0.0, 1.0], [2.0, 4.0], [4.0, 8.0]])
    torch.testing.assert_close(pool_by_spans(states, [(0, 0), (0, 3), (3, 5)], [(0, 5), (4, 5)]),
                               torch.tensor([[3.0, 6.0], [4.0, 8.0]]))
    with pytest.raises(ValueError, match=r"`spans\[1\]` to be a span that overlaps at least one token"):
        pool_by_spans(states, [(0, 0), (0, 3), (4, 5)], [(0, 3), (3, 4)])


def test_token_logits_agree_with_scoring(lm):
    out = lm.token_logits(["mary went to the garden .", "john"])
    assert out[0].logits.shape == (7, lm.vocab_size) and out[1].logits.shape == (2, lm.vocab_size)
    score = lm.score(["mary"], [" went to the garden ."])[0]
    logprobs = out[0].logits.log_softmax(-1)
    expected = torch.stack([logprobs[t - 1, out[0].input_ids[t]] for t in range(2, 7)])
    torch.testing.assert_close(score.token_logprobs, expected, rtol=0, atol=1e-5)


def test_greedy_generation_batched_equals_one_at_a_time_and_leaves_padding_side_alone(lm):
    prompts = ["mary went to the", "where is", "sandra picked up the apple . where is the apple ?"]
    lm.tokenizer.padding_side = "right"
    batched = lm.generate(prompts, max_new_tokens=6, batch_size=3)
    assert batched == [lm.generate([p], max_new_tokens=6)[0] for p in prompts]
    assert all(text.strip() and len(text.split()) <= 6 for text in batched)
    assert lm.tokenizer.padding_side == "right"


def test_sampling_is_reproducible_for_a_seed_and_leaves_the_global_rng_alone(lm):
    prompts = ["mary went to the", "where is"]
    state = torch.get_rng_state()
    first = lm.generate(prompts, max_new_tokens=8, do_sample=True, temperature=1.5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert lm.generate(prompts, max_new_tokens=8, do_sample=True, temperature=1.5, seed=3) == first
    assert lm.generate(prompts, max_new_tokens=8, do_sample=True, temperature=1.5, seed=4) != first


def test_generation_is_cut_at_eos_and_at_the_stop_string(llama_dir):
    lm = LanguageModel.from_pretrained(llama_dir)
    full = lm.generate(["mary went to the"], max_new_tokens=6)[0]
    words = full.split()
    j = next(j for j in range(1, len(words)) if words[j] not in words[:j])
    assert lm.generate(["mary went to the"], max_new_tokens=6, stop=words[j])[0] == full[:full.index(words[j])]
    lm.model.generation_config.eos_token_id = lm.tokenizer.convert_tokens_to_ids(words[j])
    assert lm.generate(["mary went to the"], max_new_tokens=6)[0].split() == words[:j]


def test_generation_stops_at_the_stop_string_instead_of_running_to_the_limit(llama_dir):
    lm = LanguageModel.from_pretrained(llama_dir)
    prompts = ["mary went to the", "where is", "john"]
    full = lm.generate(prompts, max_new_tokens=12, batch_size=3)
    words = full[0].split()
    j = next(j for j in range(1, len(words)) if words[j] not in words[:j])  # the first new word seen once
    stop = words[j]
    assert lm.generate(prompts, max_new_tokens=12, batch_size=3, stop=stop) == [
        t[:t.index(stop)] if stop in t else t for t in full]  # exactly the text before the stop string
    steps = []
    hook = lm.model.register_forward_hook(lambda *_: steps.append(1))
    try:
        lm.generate(prompts[:1], max_new_tokens=12, stop=stop)
    finally:
        hook.remove()
    assert len(steps) == j + 1 < 12  # one forward pass per word up to the stop word, none after


def test_greedy_is_plain_argmax_whatever_the_checkpoints_generation_config(llama_dir):
    lm = LanguageModel.from_pretrained(llama_dir)
    lm.model.generation_config.update(do_sample=True, top_k=3, temperature=0.5, repetition_penalty=2.0,
                                      no_repeat_ngram_size=1)
    ids = lm.tokenizer("where is")["input_ids"]
    n_prompt = len(ids)
    with torch.no_grad():
        for _ in range(6):  # the reference: full forward pass, argmax, append
            ids.append(int(lm.model(torch.tensor([ids])).logits[0, -1].argmax()))
    expected = " " + " ".join(lm.tokenizer.convert_ids_to_tokens(ids[n_prompt:]))
    assert lm.generate(["where is"], max_new_tokens=6)[0] == expected


def test_qwen2_with_no_pad_token_scores_and_generates_like_llama(qwen):
    assert qwen.tokenizer.pad_token is None and qwen.pad_token_id == qwen.tokenizer.eos_token_id
    contexts, continuations = ["mary went", "where is the apple ?"], [" to the garden .", " in the kitchen ."]
    batched = qwen.score(contexts, continuations, batch_size=2)
    for i, result in enumerate(batched):
        alone = qwen.score([contexts[i]], [continuations[i]])[0]
        torch.testing.assert_close(result.token_logprobs, alone.token_logprobs, rtol=0, atol=1e-5)
        assert "".join(continuations[i][s:e] for s, e in result.offsets) == continuations[i]
    prompts = ["mary went to", "where is the apple ? the apple is in"]
    assert qwen.generate(prompts, max_new_tokens=5) == [qwen.generate([p], max_new_tokens=5)[0] for p in prompts]
    with pytest.raises(ValueError, match="Nothing predicts the first token"):
        qwen.score([""], ["mary"])  # no bos token: an empty context leaves nothing to condition on


def test_vocabulary_check_names_the_first_difference(lm, qwen, tmp_path):
    assert lm.same_vocabulary(lm) and not lm.same_vocabulary(qwen)
    check_same_vocabulary(lm, lm)
    other_tok = build_word_tokenizer(CORPUS, extra_tokens=["<sep>"])
    torch.manual_seed(0)
    other = LanguageModel(LlamaForCausalLM(LlamaConfig(vocab_size=len(other_tok), **SIZES)), other_tok, "student")
    n_teacher, n_student = len(lm.tokenizer), len(other_tok)
    with pytest.raises(ValueError, match=(rf"token-level KD needs one vocabulary.*teacher has {n_teacher} tokens, "
                                          rf"student {n_student}; the first differing token is id 4 \(teacher "
                                          r"'[^']+', student '<sep>'\)\. Use sequence-level KD")):
        check_same_vocabulary(lm, other)


def test_missing_folder_and_pickle_weights_are_refused(llama_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        LanguageModel.from_pretrained(tmp_path / "no-such-model")
    pickled = shutil.copytree(llama_dir, tmp_path / "pickled")
    (pickled / "model.safetensors").unlink()
    # save_pretrained(safe_serialization=False) no longer writes pickle in transformers 5: write one by hand.
    torch.save(LlamaForCausalLM(LlamaConfig.from_pretrained(pickled)).state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pickle weights only \(pytorch_model.bin\).*use_safetensors=False"):
        LanguageModel.from_pretrained(pickled)


def test_remote_code_is_off_unless_asked_and_nothing_is_downloaded(llama_dir, monkeypatch):
    calls = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(path, *args, **kwargs):
        calls.append(kwargs)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    LanguageModel.from_pretrained(llama_dir)
    LanguageModel.from_pretrained(llama_dir, trust_remote_code=True)
    assert [c["trust_remote_code"] for c in calls] == [False, True]
    assert all(c["local_files_only"] and c["use_safetensors"] for c in calls)


def test_a_word_tokenizer_saved_beside_a_qwen2_model_reloads_unchanged(tmp_path):
    # transformers 5's AutoTokenizer would swap in Qwen2Tokenizer here and tokenize these words differently.
    tok = build_word_tokenizer(CORPUS)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), **SPECIAL_TOKEN_IDS, **SIZES))
    loaded = LanguageModel.from_pretrained(save(model, tok, tmp_path))
    text = "where is mary ? sandra picked up the apple ."
    assert loaded.tokenizer(text, return_offsets_mapping=True) == tok(text, return_offsets_mapping=True)


def test_methods_restore_the_models_training_mode(lm):
    lm.model.train()
    try:
        lm.score(["mary"], [" went"])
        lm.generate(["mary"], max_new_tokens=2)
        assert lm.model.training
    finally:
        lm.model.eval()


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda lm: lm.score([], []), ValueError, "`contexts` to be a non-empty list of str, but got an empty list"),
    (lambda lm: lm.score("mary", " went"), TypeError, "`contexts` to be a list of str, but got str"),
    (lambda lm: lm.score(["a", "b"], [" c"]), ValueError, "the same length, but got 2 and 1"),
    (lambda lm: lm.score(["a"], [3]), TypeError, r"`continuations\[0\]` to be a str, but got int"),
    (lambda lm: lm.score(["a"], [""]), ValueError, r"`continuations\[0\]` to be a non-empty str"),
    (lambda lm: lm.score(["a"], [" b"], batch_size=0), ValueError, "`batch_size` to be a positive integer"),
    (lambda lm: lm.hidden_states(["mary", "the " * 40]), ValueError,
     r"`texts\[1\]` to be at most 32 tokens \(.*max_position_embeddings\), but got 41 tokens \(160 characters\)"),
    (lambda lm: lm.score(["mary", "the " * 20], [" went", "the " * 20]), ValueError,
     r"`contexts\[1\] \+ continuations\[1\]` to be at most 32 tokens .* but got 41 tokens"),
    (lambda lm: lm.generate(["the " * 30], max_new_tokens=4), ValueError,
     r"`prompts\[0\]` to be at most 32 tokens .* but got 31 tokens \+ 4 new"),
    (lambda lm: lm.generate(["a"], top_p=0), ValueError, "`top_p` to be a number in"),
    (lambda lm: lm.generate(["a"], stop=""), ValueError, "`stop` to be None or a non-empty str"),
    (lambda lm: LanguageModel.from_pretrained(".", dtype="float8"), ValueError, "`dtype` to be None"),
])
def test_bad_inputs_raise_with_the_fix(lm, call, error, match):
    with pytest.raises(error, match=match):
        call(lm)
