"""Your questions checked as the lab's are: the answer read and judged by the question's rule, the steps by the
arithmetic checker, and nothing claimed where nothing can be checked."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdlens.audit.lm.config import AnswerSettings
from kdlens.audit.lm.data import examples
from kdlens.tasks import free_text as F
from kdlens.tasks.questions import Question

SOLVED = Question("Ann has 48 clips and sells half. Then she buys 24. How many now?", "48",
                  "She sells 48 / 2 = 24. Then 24 + 24 = 48.", difficulty=2, category="word_problem")


def example(question=SOLVED, **settings) -> F.QuestionExample:
    return examples([question], AnswerSettings(**settings))[0]


def test_a_right_trace_reaches_every_gold_result_and_states_no_false_equation():
    check = F.check_trace(example(), " She sells 48 / 2 = 24. Then 24 + 24 = 48. The answer is 48.")
    assert check.answer_correct and check.answer == "48" and check.steps_correct == [True, True]
    assert check.trace_correct is True
    assert check.sentence_correct == [True, True, None]


def test_a_right_answer_through_a_false_equation_is_a_wrong_trace():
    check = F.check_trace(example(), " 48 / 2 = 20. 20 + 28 = 48. The answer is 48.")
    assert check.answer_correct and check.trace_correct is False
    assert check.steps_correct == [False, True]  # 24 is never reached; 48 is stated
    assert check.sentence_correct[0] is False


def test_without_a_solution_a_trace_with_no_equation_is_not_checkable():
    bare = Question("What is 7 + 5?", "12")
    assert F.check_trace(example(bare), " 12").trace_correct is None
    assert F.check_trace(example(bare), " 7 + 5 = 12, so 12.").trace_correct is True
    assert F.check_trace(example(bare), " 7 + 5 = 13, so 12.").trace_correct is False


def test_word_answers_are_read_from_the_last_sentence_and_never_step_checked():
    where = Question("Mary went to the hall. Mary went to the kitchen. Where is Mary?", "kitchen")
    e = example(where)
    assert (e.rule.extract, e.rule.compare, e.rule.steps) == ("sentence", "contains", "none")
    check = F.check_trace(e, " Mary is in the kitchen. The answer is the Kitchen.")
    assert check.answer_correct and check.answer == "kitchen" and check.trace_correct is None
    assert check.steps_correct == [] and check.sentence_correct == [None, None]
    plain = F.check_trace(e, " Mary went to the hall first, then to the kitchen. So Mary is in the kitchen.")
    assert plain.answer_correct and plain.answer == "kitchen"  # agrees with the first: the gold's words
    wrong = F.check_trace(e, " Mary is in the hall.")
    assert not wrong.answer_correct and wrong.answer == "mary is in hall"
    assert (example(where, compare="normalized").rule.compare, example(where, extract="answer_is").rule.extract) == (
        "normalized", "answer_is")


def test_a_multiple_choice_question_reads_the_letter_and_takes_the_option_text_as_gold():
    mc = Question("Which is a fruit?", "apple", choices=("carrot", "apple", "leek"))
    e = example(mc)
    assert (e.rule.extract, e.rule.compare) == ("choice", "choice")
    assert F.check_trace(e, " The answer is (B).").answer_correct
    assert not F.check_trace(e, " The answer is (A).").answer_correct


def test_the_answer_is_read_after_the_thinking_block_and_an_unclosed_block_answers_nothing():
    e = example(Question("What is 2 + 2?", "4"))
    assert F.check_trace(e, "<think>2 + 2 = 5? no, 2 + 2 = 4</think> The answer is 4.").answer_correct
    unclosed = F.check_trace(e, "<think>2 + 2 = 4, so the answer is 4")
    assert unclosed.answer is None and not unclosed.answer_correct


def test_numbers_written_differently_are_the_same_answer_for_agreement():
    e = example(Question("How much?", "1200"))
    a, b = F.check_trace(e, " The answer is $1,200."), F.check_trace(e, " so 1200.0")
    assert a.answer == b.answer == "1200" and a.answer_text == "$1,200"


def test_steps_none_switches_the_checker_off_even_for_numbers():
    e = example(steps="none")
    check = F.check_trace(e, " 48 / 2 = 20. The answer is 48.")
    assert check.trace_correct is None and check.answer_correct


def test_a_shot_is_the_solution_then_the_answer():
    assert F.shot(example()) == "She sells 48 / 2 = 24. Then 24 + 24 = 48. The answer is 48."
    assert F.shot(example(Question("q", "7"))) == "The answer is 7."


@given(st.text(max_size=200))
def test_checking_never_raises_on_model_output(text):
    for e in (example(), example(Question("Where?", "garden")), example(steps="none")):
        check = F.check_trace(e, text)
        assert len(check.sentence_correct) == len(check.sentences)


@pytest.mark.parametrize("settings, message", [
    ({"extract": "regex"}, "no pattern is given"),
    ({"extract": "regex", "pattern": "("}, "not a regular expression"),
    ({"pattern": "x"}, "set extract: regex"),
    ({"think": ["", "</think>"]}, "two non-empty strings"),
    ({"compare": "numeric", "tolerance": -1}, "tolerance"),
])
def test_bad_answer_settings_name_the_fix(settings, message):
    with pytest.raises(ValueError, match=message):
        AnswerSettings(**settings)
