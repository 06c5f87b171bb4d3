"""Fine-tuning and token-level KD of tiny Hugging Face causal LMs: target masks, losses, resume, save."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from kdlens.distill import TrainConfig
from kdlens.distill.lm import TokenKD, _token_loss, encode, train_lm

WORDS = ["a", "b", "c", "=", "+", ";", "?", "is", "so", "the", "answer"] + [str(i) for i in range(20)]


def tokenizer(words=WORDS) -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>")


def llama(vocab_size: int, seed: int = 0, hidden: int = 32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=64, tie_word_embeddings=False))


def chains(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    g = torch.Generator().manual_seed(seed)
    prompts, targets = [], []
    for _ in range(n):
        x, y = (int(v) for v in torch.randint(0, 10, (2,), generator=g))
        prompts.append(f"a = {x} ; b = a + {y} ; b ?")
        targets.append(f"b is {x + y} so the answer is {x + y}")
    return prompts, targets


def test_only_the_target_and_its_eos_are_targets():
    tok = tokenizer()
    enc = encode(tok, ["a = 3 ; a ?", "a ?"], ["the answer is 3", "3"])
    ids = enc.input_ids[0][enc.attention_mask[0].bool()]
    targets = enc.input_ids[0][enc.target_mask[0]]
    assert tok.convert_ids_to_tokens(targets.tolist()) == ["the", "answer", "is", "3", "<eos>"]
    assert ids[-1] == tok.eos_token_id and enc.target_mask[1].sum() == 2  # "3" and eos
    assert not enc.target_mask[enc.attention_mask == 0].any()  # padding is never a target


def test_cross_entropy_counts_target_tokens_only():
    tok = tokenizer()
    enc = encode(tok, ["a = 3 ; a ?"], ["the answer is 3"])
    model = llama(len(tok))
    with torch.no_grad():
        logits = model(input_ids=enc.input_ids).logits
    loss, parts = _token_loss(logits, None, enc, None)
    log_p = logits[0, :-1].log_softmax(-1)
    next_ids = enc.input_ids[0, 1:]
    chosen = enc.target_mask[0, 1:]
    expected = -log_p[torch.arange(len(next_ids)), next_ids][chosen].mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6) and parts["ce"] == pytest.approx(float(loss))


def test_token_kd_of_a_model_with_itself_is_zero():
    tok = tokenizer()
    enc = encode(tok, ["a = 3 ; a ?", "a ?"], ["the answer is 3", "3"])
    model = llama(len(tok))
    with torch.no_grad():
        logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
    for loss_name in ("forward_kl", "reverse_kl", "gjsd"):
        kd = TokenKD(loss=loss_name, temperature=2.0)
        loss, parts = _token_loss(logits, logits.detach(), enc, kd)
        assert float(loss) == pytest.approx(0.0, abs=1e-6) and parts[loss_name] == pytest.approx(0.0, abs=1e-6)


def test_fine_tuning_learns_the_task_and_saves_a_reloadable_model(tmp_path):
    tok = tokenizer()
    prompts, targets = chains(96)
    model = llama(len(tok), hidden=48)
    config = TrainConfig(epochs=12, batch_size=32, lr=1e-2, progress=False)
    result = train_lm(model, tok, prompts, targets, tmp_path / "run", config)
    assert result.history[-1]["ce"] < 0.5 * result.history[0]["ce"]
    reloaded = AutoModelForCausalLM.from_pretrained(result.model_dir, local_files_only=True)
    assert (result.model_dir / "model.safetensors").is_file() and (result.model_dir / "tokenizer.json").is_file()
    enc = encode(tok, prompts[:4], targets[:4])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=enc.input_ids).logits, model(input_ids=enc.input_ids).logits,
                              atol=1e-5)


def test_token_level_kd_pulls_the_student_towards_the_teacher(tmp_path):
    tok = tokenizer()
    prompts, targets = chains(64)
    teacher = llama(len(tok), seed=1)
    train_lm(teacher, tok, prompts, targets, tmp_path / "teacher", TrainConfig(epochs=6, batch_size=32, lr=1e-2,
                                                                              progress=False))
    enc = encode(tok, prompts, targets)

    def kl_to_teacher(student) -> float:
        with torch.no_grad():
            s = student(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
            t = teacher(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
        return float(_token_loss(s, t, enc, TokenKD())[1]["forward_kl"])

    student = llama(len(tok), seed=2)
    before = kl_to_teacher(student)
    result = train_lm(student, tok, prompts, targets, tmp_path / "kd", TrainConfig(epochs=4, batch_size=32, lr=1e-2,
                      progress=False), teacher=teacher, kd=TokenKD(loss="forward_kl", temperature=2.0))
    assert kl_to_teacher(student) < 0.5 * before
    assert {"ce", "forward_kl", "loss"} <= set(result.history[-1])


def test_the_teacher_cache_trains_the_student_as_the_teacher_in_the_loop_does(tmp_path):
    tok = tokenizer()
    prompts, targets = chains(48)
    teacher = llama(len(tok), seed=1)
    runs = {}
    for name, cache_mb in (("cached", 1024), ("live", 0)):
        student = llama(len(tok), seed=2)
        runs[name] = train_lm(student, tok, prompts, targets, tmp_path / name, TrainConfig(
            epochs=2, batch_size=16, lr=1e-2, progress=False, teacher_cache_mb=cache_mb), teacher=teacher,
            kd=TokenKD(loss="forward_kl", temperature=2.0)).history, student
    for a, b in zip(runs["cached"][1].parameters(), runs["live"][1].parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # batch shapes differ: float rounding only
    assert runs["cached"][0][-1]["forward_kl"] == pytest.approx(runs["live"][0][-1]["forward_kl"], rel=1e-4)


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    tok = tokenizer()
    prompts, targets = chains(40)
    config = TrainConfig(epochs=2, batch_size=16, lr=5e-3, progress=False, checkpoint_every=2)
    reference = llama(len(tok), seed=3)
    train_lm(reference, tok, prompts, targets, tmp_path / "whole", config)

    interrupted = llama(len(tok), seed=3)
    calls = {"n": 0}
    original = interrupted.forward

    def dies_at_step_four(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    interrupted.forward = dies_at_step_four
    with pytest.raises(KeyboardInterrupt):
        train_lm(interrupted, tok, prompts, targets, tmp_path / "resumed", config)
    resumed = llama(len(tok), seed=99)  # other initial weights: everything must come from the checkpoint
    train_lm(resumed, tok, prompts, targets, tmp_path / "resumed", config)
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_token_level_kd_needs_one_vocabulary(tmp_path):
    other = tokenizer(WORDS + ["extra"])
    prompts, targets = chains(4)
    with pytest.raises(ValueError, match="one vocabulary.*sequence-level KD"):
        train_lm(llama(len(tokenizer())), tokenizer(), prompts, targets, tmp_path, TrainConfig(progress=False),
                 teacher=llama(len(other)), teacher_tokenizer=other, kd=TokenKD())


@pytest.mark.parametrize("bad, message", [
    ({"prompts": ["a ?"], "targets": []}, "the same length"),
    ({"prompts": [], "targets": []}, "at least one example"),
    ({"prompts": ["a = 1 ; a ?"], "targets": ["the answer is 1"], "max_length": 4}, "at most 4 tokens"),
])
def test_bad_inputs(bad, message):
    with pytest.raises(ValueError, match=message):
        encode(tokenizer(), **bad)


def test_teacher_and_kd_go_together(tmp_path):
    prompts, targets = chains(4)
    tok = tokenizer()
    with pytest.raises(ValueError, match="given together"):
        train_lm(llama(len(tok)), tok, prompts, targets, tmp_path, TrainConfig(progress=False), teacher=llama(len(tok)))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 400), batch_size=st.integers(1, 37), seed=st.integers(0, 10_000))
def test_an_epoch_order_visits_every_example_once(n, batch_size, seed):
    from kdlens.distill.lm import epoch_order

    lengths = torch.randint(1, 90, (n,), generator=torch.Generator().manual_seed(seed))
    order = epoch_order(lengths, batch_size, seed, group_by_length=True, group_batches=3)
    assert sorted(order.tolist()) == list(range(n))
    assert torch.equal(order, epoch_order(lengths, batch_size, seed, group_by_length=True, group_batches=3))


def test_grouping_by_length_pads_less_and_plain_order_is_a_permutation_of_the_seed():
    from kdlens.distill.lm import epoch_order

    lengths = torch.randint(10, 100, (2000,), generator=torch.Generator().manual_seed(0))

    def padding(order):
        return sum(int(b.max() - b.min()) for b in lengths[order].split(32))

    grouped, plain = epoch_order(lengths, 32, 7), epoch_order(lengths, 32, 7, group_by_length=False)
    assert torch.equal(plain, torch.randperm(2000, generator=torch.Generator().manual_seed(7)))
    assert padding(grouped) < 0.2 * padding(plain)
