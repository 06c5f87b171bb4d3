"""The chains task: every step follows from the prompt, gold traces check out in both styles, and the checker marks
exactly what was altered while never raising on what a model writes."""

import collections
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlens.config import validate
from kdlens.tasks.chains import (
    NAMES,
    SPLITS,
    ChainExample,
    ChainsConfig,
    TraceCheck,
    check_trace,
    make_split,
    parse_answer,
    write_trace,
)
from kdlens.tasks.text import CHUNK, normalize, split_sentences

CONFIG = ChainsConfig()
EXAMPLES = make_split(CONFIG, "train", 3000)
HAND = ChainExample(prompt="a = 3 ; b = a + 4 ; c = b * 2 ; c ?", answer="14", steps=("b = 7", "c = 14"), difficulty=2,
                    variables=("a", "b", "c"), values=(3, 7, 14), operations=("+", "*"), operands=(4, 2))


def evaluate(prompt: str) -> dict[str, int]:
    """An independent reading of a prompt: each ``name = ...`` equation in order, the query last."""
    *equations, query = prompt.split(" ; ")
    assert re.fullmatch(r"[a-z] \?", query)
    values = {}
    for k, equation in enumerate(equations):
        if k == 0:
            name, number = re.fullmatch(r"([a-z]) = (\d+)", equation).groups()
            values[name] = int(number)
            continue
        name, source, op, operand = re.fullmatch(r"([a-z]) = ([a-z]) ([-+*]) (\d+)", equation).groups()
        assert source == list(values)[-1], "each variable depends on the one before"
        x, y = values[source], int(operand)
        values[name] = {"+": x + y, "-": x - y, "*": x * y}[op]
    assert query[0] == list(values)[-1]
    return values


def test_the_documented_trace_formats():
    assert HAND.prompt == "a = 3 ; b = a + 4 ; c = b * 2 ; c ?"
    assert write_trace(HAND) == "a is 3 . b is a plus 4 , so b is 7 . c is b times 2 , so c is 14 . The answer is 14 ."
    assert write_trace(HAND, "student") == "a = 3 ; b = 7 ; c = 14 ; answer 14"


def test_steps_values_and_answer_follow_from_the_prompt():
    for example in EXAMPLES:
        values = evaluate(example.prompt)
        assert list(values) == list(example.variables) == list(NAMES[: example.difficulty + 1])
        assert tuple(values.values()) == example.values
        assert example.steps == tuple(f"{name} = {value}" for name, value in list(values.items())[1:])
        assert example.answer == str(example.values[-1]) and len(example.steps) == example.difficulty
        assert all(0 <= v <= CONFIG.max_value for v in example.values)
        assert CONFIG.start_range[0] <= example.values[0] <= CONFIG.start_range[1]


@pytest.mark.parametrize("config", [
    ChainsConfig(min_steps=3, max_steps=12, max_value=20, operand_range=(0, 9), seed=3),
    ChainsConfig(operations=("+", "-"), max_value=9, start_range=(0, 9), operand_range=(1, 3)),
    ChainsConfig(operations=("-", "*"), multiplier_range=(0, 3)),
])
def test_any_valid_config_keeps_values_in_range(config):
    for example in make_split(config, "test", 500):
        assert config.min_steps <= example.difficulty <= config.max_steps
        assert set(example.operations) <= set(config.operations)
        assert all(0 <= v <= config.max_value for v in evaluate(example.prompt).values())


def test_difficulty_is_uniform_over_the_step_range():
    counts = collections.Counter(example.difficulty for example in EXAMPLES)
    assert sorted(counts) == list(range(1, 9))
    half = 5 * math.sqrt(3000 / 8 * 7 / 8)  # five binomial standard deviations
    assert all(abs(count - 3000 / 8) < half for count in counts.values())
    assert set(collections.Counter(op for e in EXAMPLES for op in e.operations)) == {"+", "-", "*"}


def test_same_seed_same_examples_and_other_seeds_or_splits_differ():
    assert make_split(CONFIG, "train", 50) == EXAMPLES[:50]
    assert make_split(ChainsConfig(seed=1), "train", 50) != EXAMPLES[:50]
    firsts = {split: make_split(CONFIG, split, 50) for split in SPLITS}
    assert len({tuple(e.prompt for e in examples) for examples in firsts.values()}) == 3


@pytest.mark.parametrize("k, n", [(1, 7), (CHUNK - 1, CHUNK + 5), (CHUNK + 3, 2 * CHUNK + 1)])
def test_a_split_is_a_prefix_of_any_larger_one(k, n):
    assert make_split(CONFIG, "validation", k) == make_split(CONFIG, "validation", n)[:k]


@pytest.mark.parametrize("style", ["teacher", "student"])
def test_every_gold_trace_checks_fully_correct(style):
    for example in EXAMPLES:
        check = check_trace(example, write_trace(example, style))
        assert check.steps_correct == [True] * example.difficulty
        assert check.trace_correct and check.answer_correct and check.answer == example.answer
        assert check.sentence_correct == [True] * (example.difficulty + 1) + [None]


def test_styles_are_tokenizable_words_from_a_small_closed_vocabulary():
    vocabulary = ({str(v) for v in range(CONFIG.max_value + 1)} | set(NAMES) | set(".,;?=+-*")
                  | {"is", "plus", "minus", "times", "so", "The", "answer"})
    for example in EXAMPLES[:500]:
        for text in (example.prompt, write_trace(example), write_trace(example, "student")):
            assert set(text.split()) <= vocabulary
            assert text == " ".join(text.split())
    teacher, student = write_trace(HAND).split(" . "), write_trace(HAND, "student").split(" ; ")
    assert not set(teacher) & set(student)  # no sentence is written the same way in both styles


@pytest.mark.parametrize("style", ["teacher", "student"])
def test_one_altered_step_is_marked_and_the_answer_can_still_be_right(style):
    for example in EXAMPLES[:300]:
        for step in range(example.difficulty - 1):  # the last step's value is the answer: altered below
            name, value = example.variables[step + 1], example.values[step + 1]
            text = write_trace(example, style)
            wrong = value + 1
            old, new = ((f"so {name} is {value} .", f"so {name} is {wrong} .") if style == "teacher"
                        else (f"{name} = {value} ;", f"{name} = {wrong} ;"))
            check = check_trace(example, text.replace(old, new))
            assert check.steps_correct == [i != step for i in range(example.difficulty)]
            assert not check.trace_correct and check.answer_correct
            assert check.sentence_correct.count(False) == 1


def test_right_steps_and_a_wrong_answer():
    for style in ("teacher", "student"):
        text = write_trace(HAND, style).replace("answer is 14", "answer is 15").replace("answer 14", "answer 15")
        check = check_trace(HAND, text)
        assert check.steps_correct == [True, True] and check.trace_correct
        assert check.answer == "15" and not check.answer_correct


def test_wrong_or_invented_statements_make_the_trace_wrong():
    restated = check_trace(HAND, "a = 4 ; b = 7 ; c = 14 ; answer 14")
    assert restated.steps_correct == [True, True] and not restated.trace_correct
    assert restated.sentence_correct == [False, True, True, None]
    invented = check_trace(HAND, "b = 7 ; z = 1 ; c = 14 ; answer 14")
    assert invented.sentence_correct == [True, False, True, None] and not invented.trace_correct
    missing = check_trace(HAND, "a is 3 . c is 14 . The answer is 14 .")
    assert missing.steps_correct == [False, True] and missing.answer_correct
    repeated = check_trace(HAND, "b = 7 ; b = 8 ; c = 14 ; answer 14")
    assert repeated.steps_correct == [False, True]


def test_the_checker_reads_loose_spacing_and_case():
    check = check_trace(HAND, "A=3;B = 7;c=14 ;\nAnswer: 14")
    assert check.steps_correct == [True, True] and check.trace_correct and check.answer == "14"
    assert check_trace(HAND, "b is 07 . c is 14 . answer is 14").steps_correct == [True, True]


def test_sentences_carry_their_character_spans():
    text = "  a is 3 .  b is a plus 4 , so b is 7 .\n\nThe answer is 7"
    check = check_trace(HAND, text)
    assert check.sentences == ["a is 3 .", "b is a plus 4 , so b is 7 .", "The answer is 7"]
    assert [text[start:end] for start, end in check.spans] == check.sentences
    assert check.sentence_correct == [True, True, None] and check.steps_correct == [True, False]


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_the_checker_never_raises_on_garbage(text):
    check = check_trace(HAND, text)
    assert isinstance(check, TraceCheck) and len(check.steps_correct) == 2
    assert len(check.sentences) == len(check.spans) == len(check.sentence_correct)
    assert [text[start:end] for start, end in check.spans] == check.sentences
    assert check.answer == parse_answer(text)
    split_sentences(text), normalize(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "=", "is", "3", "7", "14", ";", ".", "answer", "so", ",", "?"]),
                max_size=30))
def test_the_checker_never_raises_on_trace_shaped_garbage(words):
    check = check_trace(HAND, " ".join(words))
    assert check.trace_correct == (all(check.steps_correct) and False not in check.sentence_correct)


def test_parse_answer_takes_the_last_answer_sentence():
    assert parse_answer("The answer is 3 . The answer is 14 .") == "14"
    assert parse_answer("a = 3 ; answer 14") == "14"
    assert parse_answer("a = 3 ; b = 7") is None
    assert parse_answer("") is None


@pytest.mark.parametrize("bad, message", [
    ({"max_step": 3}, "Did you mean 'max_steps'"),
    ({"min_steps": 5, "max_steps": 2}, "min_steps must be at most max_steps"),
    ({"max_steps": 26}, "max_steps"),
    ({"operand_range": (5, 2)}, "operand_range must be"),
    ({"operations": ("*",)}, "add '+' and '-'"),
    ({"operations": ("/",)}, "operations"),
    ({"operations": ()}, "not empty"),
])
def test_bad_configs_are_rejected_with_the_reason(bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate(bad, ChainsConfig)


def test_bad_arguments_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match=r"Expected `split` to be one of .*Did you mean 'validation'\?"):
        make_split(CONFIG, "valid", 10)
    with pytest.raises(ValueError, match="Expected `n` to be a positive integer"):
        make_split(CONFIG, "train", 0)
    with pytest.raises(ValueError, match=r"Expected `style`.*Did you mean 'student'\?"):
        write_trace(HAND, "students")
    with pytest.raises(TypeError, match="Expected `text` to be a str"):
        check_trace(HAND, None)
    with pytest.raises(TypeError, match="Expected `example` to be a ChainExample"):
        check_trace("a = 3 ; a ?", "answer 3")


def test_ten_thousand_examples_are_quick_to_draw():
    examples = make_split(CONFIG, "test", 10_000)  # about 0.3 s; nothing timed here, a slow draw shows in the suite
    assert len(examples) == 10_000 and len({e.prompt for e in examples}) > 9_000
