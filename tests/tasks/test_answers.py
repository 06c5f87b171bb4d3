"""Answer extraction and comparison on 50 hand-written model outputs with known answers (free-text arithmetic,
boxed, <think> blocks, multiple choice, short text answers), plus properties and bad input."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdlens.tasks.answers import answers_match, extract_answer, normalize, parse_number

OUTPUTS = [json.loads(line) for line in (Path(__file__).parent / "answer_outputs.jsonl").read_text().splitlines()]


def settings(extract: str) -> tuple[str, dict]:
    """``"regex:PATTERN"`` and ``"choice:a|b|c"`` in the file carry the extractor's argument."""
    how, _, argument = extract.partition(":")
    if how == "regex":
        return how, {"pattern": argument}
    return how, ({"choices": argument.split("|")} if argument else {})


@pytest.mark.parametrize("row", OUTPUTS, ids=[f"{i + 1}" for i in range(len(OUTPUTS))])
def test_each_hand_written_output_gives_its_known_answer(row):
    how, extra = settings(row["extract"])
    answer = extract_answer(row["text"], how, **extra)
    assert answers_match(answer, row["gold"], row["compare"], choices=extra.get("choices")), answer


def test_the_set_is_varied():
    assert len(OUTPUTS) == 50
    kinds = {r["compare"] for r in OUTPUTS}
    assert kinds == {"numeric", "choice", "normalized", "exact"}
    assert sum("<think>" in r["text"] for r in OUTPUTS) >= 3 and sum("boxed" in r["text"] for r in OUTPUTS) >= 3


@given(st.integers(-10**9, 10**9))
def test_any_integer_written_with_thousands_separators_reads_back(value):
    assert parse_number(f"{value:,}") == value and parse_number(f"${value:,} in all") == value


@given(st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3)))
def test_numeric_comparison_is_reflexive_and_tolerant(value):
    assert answers_match(f"{value}", f"{value}", "numeric")
    assert not answers_match(f"{value + 1}", f"{value}", "numeric")


def test_fractions_percentages_and_latex_read_as_numbers():
    assert parse_number("3/4") == 0.75 and parse_number("\\frac{3}{4}") == 0.75 and parse_number("45%") == 45
    assert parse_number("no number here") is None and parse_number("3/0") is None


def test_no_answer_is_never_a_match():
    assert extract_answer("I do not know.", "last_number") is None
    assert not answers_match(None, "3", "numeric") and not answers_match(None, "a", "normalized")


def test_normalisation_drops_case_punctuation_and_articles():
    assert normalize("The  Kitchen!") == "kitchen" and normalize("an apple, a pear") == "apple pear"


@pytest.mark.parametrize("call, message", [
    (lambda: extract_answer("x", "lastnumber"), "Expected `extract` to be one of 'auto'"),
    (lambda: extract_answer("x", "regex"), "Expected `pattern` to be a regular expression"),
    (lambda: answers_match("1", "1", "fuzzy"), "Expected `compare` to be one of 'numeric'"),
])
def test_bad_settings_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_an_answer_is_read_after_the_thinking_and_an_unclosed_thought_gives_none():
    from kdlens.tasks.answers import split_thinking

    closed = "<think>3 + 4 = 7, then 7 * 2 = 14</think>\nSo 14."
    assert split_thinking(closed) == ("3 + 4 = 7, then 7 * 2 = 14", "\nSo 14.")
    assert extract_answer(closed, "last_number") == "14"
    unclosed = "<think>3 + 4 = 7, then 7 * 2 = 14, and"  # ran out of tokens while thinking
    assert extract_answer(unclosed, "auto") is None and extract_answer(unclosed, "auto", think=None) == "14"
    assert extract_answer("</think> The answer is 9", "auto") == "9"  # the opening marker was in the prompt
    assert extract_answer("[R] 5 [/R] 6", "last_number", think=("[R]", "[/R]")) == "6"
    assert split_thinking("no markers at all") == (None, "no markers at all")
    with pytest.raises(ValueError, match="Expected `markers` to be two non-empty strings"):
        split_thinking("x", ("", "</think>"))
