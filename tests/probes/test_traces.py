"""Trace probes on gold, restyled and corrupted traces: every figure is checked against a count by hand."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from kdlens.probes.traces import check_traces, generate_traces, per_example, trace_figures
from kdlens.subjects import SPECIAL_TOKEN_IDS, LanguageModel, build_word_tokenizer
from kdlens.tasks import babi, chains


@pytest.fixture(scope="module")
def examples():
    return chains.make_split(chains.ChainsConfig(max_steps=4), "test", 40) + babi.make_split(None, "test", 40)


def gold(examples, style="teacher"):
    return [(chains if isinstance(e, chains.ChainExample) else babi).write_trace(e, style) for e in examples]


def test_gold_traces_are_right_and_agree_with_themselves(examples):
    figures = trace_figures(examples, gold(examples), teacher_texts=gold(examples))
    overall = figures["overall"]
    assert overall["accuracy"] == overall["trace_accuracy"] == 1.0
    assert overall["answer_agreement"] == overall["step_agreement"] == 1.0 and overall["bleu"] == pytest.approx(1.0)
    assert overall["table"]["counts"] == [[80, 0], [0, 0]]
    assert set(figures["tasks"]) == {"chains", "babi"} and figures["tasks"]["chains"]["n"] == 40


def test_another_style_agrees_on_steps_but_not_on_words(examples):
    figures = trace_figures(examples, gold(examples, "student"), teacher_texts=gold(examples, "teacher"))
    overall = figures["overall"]
    assert overall["accuracy"] == 1.0 and overall["step_agreement"] == 1.0 and overall["answer_agreement"] == 1.0
    assert overall["bleu"] < 0.5  # the same reasoning in other words: text overlap alone would call it unfaithful


def test_right_answers_from_wrong_traces_fill_the_table(examples):
    texts = gold(examples)
    broken = list(texts)
    chain_ids = [i for i, e in enumerate(examples) if isinstance(e, chains.ChainExample) and e.difficulty >= 2][:10]
    for i in chain_ids:  # a wrong intermediate value, the right final answer: correct answer, incorrect trace
        e = examples[i]
        wrong_step = e.steps[0].split("=")[0].strip()
        broken[i] = texts[i].replace(f"so {wrong_step} is {e.values[1]} .", f"so {wrong_step} is {e.values[1] + 1} .")
    figures = trace_figures(examples, broken, teacher_texts=texts)
    table = figures["overall"]["table"]
    assert table["counts"] == [[70, 0], [10, 0]]
    assert table["p_answer_given_incorrect_trace"] == 1.0
    assert figures["overall"]["step_agreement"] == pytest.approx(1 - sum(1 / examples[i].difficulty
                                                                         for i in chain_ids) / 80)


def test_by_difficulty_counts_each_level(examples):
    figures = trace_figures(examples, gold(examples))
    levels = figures["tasks"]["chains"]["by_difficulty"]
    assert sum(level["n"] for level in levels) == 40
    assert [level["difficulty"] for level in levels] == sorted({e.difficulty for e in examples[:40]})
    assert "answer_agreement" not in figures["overall"]  # no teacher, no agreement


def test_per_example_rows_mark_every_sentence(examples):
    rows = per_example(examples[:3], gold(examples[:3]))
    assert all(r["answer_correct"] and r["trace_correct"] for r in rows)
    assert all(any(s["correct"] is True for s in r["sentences"]) for r in rows)
    assert rows[0]["task"] == "chains" and rows[0]["gold"] == examples[0].answer


def test_garbage_output_is_wrong_not_an_error(examples):
    figures = trace_figures(examples[:5], ["", "<unk> <unk>", "the answer is", "?!", "a = = ="])
    assert figures["overall"]["accuracy"] == 0.0 and figures["overall"]["trace_accuracy"] == 0.0


def test_generated_traces_come_back_one_per_example(examples):
    tok = build_word_tokenizer([e.prompt for e in examples] + gold(examples))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=256, **SPECIAL_TOKEN_IDS))
    texts = generate_traces(LanguageModel(model, tok), examples[:4], max_new_tokens=8)
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)
    assert len(check_traces(examples[:4], texts)) == 4


@pytest.mark.parametrize("bad_examples, bad_texts, message", [
    ([], [], "at least one example"),
    (["not an example"], ["x"], "ChainExample, a BabiExample or a QuestionExample"),
])
def test_bad_inputs(bad_examples, bad_texts, message):
    with pytest.raises(ValueError, match=message):
        trace_figures(bad_examples, bad_texts)


def test_one_text_per_example(examples):
    with pytest.raises(ValueError, match="one text per example"):
        trace_figures(examples[:2], ["x"])


def tiny_lm(examples):
    tok = build_word_tokenizer([e.prompt for e in examples] + gold(examples) + gold(examples, "student"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=256, **SPECIAL_TOKEN_IDS))
    return LanguageModel(model, tok)


def test_answer_confidence_is_the_score_of_the_written_answer(examples):
    from kdlens.probes.traces import answer_confidence

    lm = tiny_lm(examples)
    texts = [" " + t for t in gold(examples[:6])]
    confidence = answer_confidence(lm, examples[:6], texts)
    assert confidence.shape == (6,) and bool(((confidence > 0) & (confidence <= 1)).all())
    e, text = examples[0], texts[0]
    start = text.rfind(e.answer)
    manual = lm.score([e.prompt + text[:start]], [text[start:start + len(e.answer)]])[0].total
    assert float(confidence[0]) == pytest.approx(math.exp(manual), rel=1e-9)


def test_answer_calibration_skips_traces_without_an_answer(examples):
    from kdlens.probes.traces import answer_calibration

    lm = tiny_lm(examples)
    texts = [" " + t for t in gold(examples[:4])] + ["? ?", ""]
    result = answer_calibration(lm, examples[:6], texts)
    assert result["n"] == 6 and result["n_scored"] == 4 and result["accuracy"] == 1.0
    assert 0 <= result["ece"] <= 1 and result["ece"] == pytest.approx(1 - result["mean_confidence"])
    nothing = answer_calibration(lm, examples[:2], ["", "?"])
    assert nothing["n_scored"] == 0 and nothing["ece"] is None
