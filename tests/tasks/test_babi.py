"""The babi task: answers and supporting facts agree with an independent replay of each story, gold traces check out
in both styles, perturbed traces fail where they should, and the checker never raises on what a model writes."""

import collections
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlens.config import validate
from kdlens.tasks.babi import (
    CATEGORY_SENTENCES,
    CATEGORY_WORDS,
    OBJECTS,
    PEOPLE,
    PLACES,
    QUESTION_TYPES,
    SPLITS,
    BabiConfig,
    BabiExample,
    BabiTraceCheck,
    check_trace,
    make_split,
    parse_answer,
    perturb_trace,
    write_trace,
)
from kdlens.tasks.text import CHUNK

CONFIG = BabiConfig()
EXAMPLES = make_split(CONFIG, "train", 2000)
EVENT = re.compile(r"(\w+) (went to|picked up|dropped) the (\w+)")
HAND = BabiExample(
    prompt="mary went to the kitchen . john went to the garden . mary picked up the apple . where is the apple ?",
    answer="kitchen", steps=("where_is", "mary went to the kitchen . mary picked up the apple"), difficulty=2,
    question_type="where_is", question="where is the apple ?",
    story=("mary went to the kitchen", "john went to the garden", "mary picked up the apple"),
    supporting_facts=("mary went to the kitchen", "mary picked up the apple"), supporting_indices=(0, 2))


def replay(story, strict: bool = True) -> tuple[dict, dict, dict]:
    """Replay a story with plain dicts: where each person and object is, who holds what, and each one's places in
    order. ``strict`` asserts that every event is possible; a loose replay reads any subset of a story."""
    where, holder, visits = {}, {}, collections.defaultdict(list)

    def arrive(thing, place):
        if not visits[thing] or visits[thing][-1] != place:
            visits[thing].append(place)
        where[thing] = place

    for sentence in story:
        person, verb, what = EVENT.fullmatch(sentence).groups()
        if verb == "went to":
            assert not strict or where.get(person) != what, "a move goes somewhere else"
            arrive(person, what)
            for thing in [t for t, h in holder.items() if h == person]:
                arrive(thing, what)
        elif verb == "picked up":
            assert not strict or (person in where and what not in holder
                                  and where.get(what, where[person]) == where[person]), sentence
            holder[what] = person
            if person in where:
                arrive(what, where[person])
        else:
            assert not strict or holder.get(what) == person, sentence
            holder.pop(what, None)
            if person in where:
                arrive(what, where[person])
    return where, holder, visits


def answer(question: str, where: dict, holder: dict, visits: dict) -> str | None:
    """Answer a question from a replayed state; None when the state cannot tell."""
    if m := re.fullmatch(r"where is (?:the )?(\w+) \?", question):
        return where.get(m[1])
    if m := re.fullmatch(r"is (?:the )?(\w+) in the (\w+) \?", question):
        return None if m[1] not in where else "yes" if where[m[1]] == m[2] else "no"
    if m := re.fullmatch(r"what is (\w+) carrying \?", question):
        return " and ".join(sorted(t for t, h in holder.items() if h == m[1])) or "nothing"
    m = re.fullmatch(r"where was (?:the )?(\w+) before the (\w+) \?", question)
    places = visits.get(m[1], [])
    if places.count(m[2]) != 1 or places.index(m[2]) == 0:
        return None
    return places[places.index(m[2]) - 1]


def test_answers_agree_with_an_independent_replay_of_the_story():
    for example in EXAMPLES:
        assert example.prompt == " . ".join(example.story) + f" . {example.question}"
        assert answer(example.question, *replay(example.story)) == example.answer, example.prompt


def test_supporting_facts_alone_give_the_answer_and_a_distractor_is_always_left():
    for example in EXAMPLES:
        assert tuple(dict.fromkeys(example.story[i] for i in example.supporting_indices)) == example.supporting_facts
        assert list(example.supporting_indices) == sorted(set(example.supporting_indices))
        assert answer(example.question, *replay(example.supporting_facts, strict=False)) == example.answer, (
            example.prompt)
        assert set(example.story) - set(example.supporting_facts), "at least one sentence supports nothing"
        assert example.steps == (example.question_type, " . ".join(example.supporting_facts))
        assert example.difficulty == len(example.supporting_facts)


def test_question_types_are_balanced_and_difficulty_spans_one_to_four_facts():
    kinds = collections.Counter(example.question_type for example in EXAMPLES)
    assert set(kinds) == set(QUESTION_TYPES) and all(abs(c - 500) < 110 for c in kinds.values())
    difficulty = collections.Counter(example.difficulty for example in EXAMPLES)
    assert set(difficulty) == {1, 2, 3, 4} and difficulty[1] > 300 and difficulty[2] > 300 and difficulty[3] > 30
    by_kind = {k: {e.difficulty for e in EXAMPLES if e.question_type == k} for k in QUESTION_TYPES}
    assert by_kind["where_is"] == {1, 2} and by_kind["yes_no"] == {1, 2} and 3 in by_kind["where_was_before"]
    answers = collections.Counter(e.answer for e in EXAMPLES if e.question_type == "yes_no")
    assert abs(answers["yes"] - answers["no"]) < 100
    carried = {e.answer for e in EXAMPLES if e.question_type == "carrying"}
    assert "nothing" in carried and any(" and " in a for a in carried)
    lengths = {len(e.story) for e in EXAMPLES}
    assert lengths == set(range(CONFIG.story_length[0], CONFIG.story_length[1] + 1))


def test_a_config_limits_the_world_and_the_questions():
    config = BabiConfig(n_people=2, n_places=3, n_objects=1, story_length=(3, 5), question_types=("carrying", "yes_no"))
    for example in make_split(config, "test", 300):
        assert example.question_type in ("carrying", "yes_no") and 3 <= len(example.story) <= 5
        words = set(" ".join(example.story).split())
        assert words & set(PEOPLE) <= set(PEOPLE[:2]) and words & set(PLACES) <= set(PLACES[:3])
        assert words & set(OBJECTS) <= {OBJECTS[0]}
        assert answer(example.question, *replay(example.story)) == example.answer


def test_same_seed_same_examples_and_other_seeds_or_splits_differ():
    assert make_split(CONFIG, "train", 50) == EXAMPLES[:50]
    assert make_split(BabiConfig(seed=1), "train", 50) != EXAMPLES[:50]
    firsts = {split: tuple(e.prompt for e in make_split(CONFIG, split, 50)) for split in SPLITS}
    assert len(set(firsts.values())) == 3


@pytest.mark.parametrize("k, n", [(1, 9), (CHUNK - 1, CHUNK + 2)])
def test_a_split_is_a_prefix_of_any_larger_one(k, n):
    assert make_split(CONFIG, "test", k) == make_split(CONFIG, "test", n)[:k]


def test_the_documented_trace_formats():
    assert write_trace(HAND) == ("This is a question about where something is . The story says : mary went to the "
                                 "kitchen , mary picked up the apple . The answer is kitchen .")
    assert write_trace(HAND, "student") == ("where now ; mary picked up the apple ; mary went to the kitchen ; "
                                            "answer kitchen")


@pytest.mark.parametrize("style", ["teacher", "student"])
def test_every_gold_trace_checks_fully_correct(style):
    for example in EXAMPLES:
        check = check_trace(example, write_trace(example, style))
        assert check.steps_correct == [True, True] and check.category_correct and check.retrieval_correct
        assert check.trace_correct and check.answer_correct and check.answer == example.answer
        assert check.category == example.question_type and set(check.quoted_facts) == set(example.supporting_facts)
        n_fact_sentences = 1 if style == "teacher" else example.difficulty
        assert check.sentence_correct == [True] * (1 + n_fact_sentences) + [None]


def test_styles_are_tokenizable_words_from_a_small_closed_vocabulary():
    vocabulary = (set(PEOPLE) | set(PLACES) | set(OBJECTS) | set(".,;:?")
                  | set(" ".join([*CATEGORY_SENTENCES.values(), *CATEGORY_WORDS.values()]).split())
                  | {"went", "to", "the", "picked", "up", "dropped", "where", "is", "was", "before", "what", "carrying",
                     "in", "The", "story", "says", "answer", "nothing", "and", "yes", "no"})
    for example in EXAMPLES[:500]:
        for text in (example.prompt, write_trace(example), write_trace(example, "student")):
            assert set(text.split()) <= vocabulary
            assert text == " ".join(text.split()) and "_" not in text
    teacher, student = re.split(r" [.;] ", write_trace(HAND)), write_trace(HAND, "student").split(" ; ")
    assert not set(teacher) & set(student)  # no sentence is written the same way in both styles


@pytest.mark.parametrize("style", ["teacher", "student"])
def test_perturbed_traces_get_category_and_retrieval_wrong_and_the_answer_right(style):
    for seed, example in enumerate(EXAMPLES[:600]):
        text = perturb_trace(example, seed, style)
        check = check_trace(example, text)
        assert not check.category_correct and not check.retrieval_correct and not check.trace_correct, text
        assert check.answer_correct and check.category != example.question_type
        assert check.quoted_facts and not set(check.quoted_facts) & set(example.supporting_facts)
        assert set(check.quoted_facts) <= set(example.story)
    assert perturb_trace(HAND, random.Random(3)) == perturb_trace(HAND, 3)


def test_one_wrong_step_is_marked_and_the_rest_still_count():
    teacher = write_trace(HAND)
    wrong_fact = check_trace(HAND, teacher.replace("mary went to the kitchen", "john went to the garden"))
    assert wrong_fact.steps_correct == [True, False] and wrong_fact.answer_correct and not wrong_fact.trace_correct
    assert wrong_fact.sentence_correct == [True, False, None]
    wrong_type = check_trace(HAND, teacher.replace(CATEGORY_SENTENCES["where_is"], CATEGORY_SENTENCES["carrying"]))
    assert wrong_type.steps_correct == [False, True] and wrong_type.category == "carrying"
    wrong_answer = check_trace(HAND, write_trace(HAND, "student").replace("answer kitchen", "answer garden"))
    assert wrong_answer.steps_correct == [True, True] and wrong_answer.trace_correct
    assert wrong_answer.answer == "garden" and not wrong_answer.answer_correct


def test_retrieval_needs_every_supporting_fact_and_nothing_else():
    half = check_trace(HAND, "where now ; mary picked up the apple ; answer kitchen")
    assert half.steps_correct == [True, False] and half.sentence_correct == [True, True, None]
    extra = check_trace(HAND, "where now ; mary picked up the apple ; mary went to the kitchen ; "
                              "john went to the garden ; answer kitchen")
    assert extra.steps_correct == [True, False] and extra.sentence_correct[3] is False
    none = check_trace(HAND, "The answer is kitchen .")
    assert none.steps_correct == [False, False] and none.answer_correct and none.category is None


def test_the_checker_reads_loose_forms_and_ignores_an_echoed_question():
    text = "WHERE_IS;Mary went to the Kitchen.  mary picked up the apple\nwhere is the apple?\nAnswer: kitchen"
    check = check_trace(HAND, text)
    assert check.steps_correct == [True, True] and check.answer == "kitchen"
    assert check.sentence_correct == [True, True, True, None, None]
    assert [text[start:end] for start, end in check.spans] == check.sentences
    assert check_trace(HAND, "where _ is ; mary went to the kitchen , mary picked up the apple ; answer kitchen"
                       ).trace_correct  # as a word-level tokenizer decodes "where_is"


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_the_checker_never_raises_on_garbage(text):
    check = check_trace(HAND, text)
    assert isinstance(check, BabiTraceCheck) and len(check.steps_correct) == 2
    assert len(check.sentences) == len(check.spans) == len(check.sentence_correct)
    assert check.answer == parse_answer(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["mary", "went", "to", "the", "kitchen", "picked", "up", "apple", "where", "now",
                                 "answer", ";", ".", ",", "is", ":", "_"]), max_size=30))
def test_the_checker_never_raises_on_trace_shaped_garbage(words):
    check = check_trace(HAND, " ".join(words))
    assert check.steps_correct == [check.category_correct, check.retrieval_correct]


@pytest.mark.parametrize("bad, message", [
    ({"n_peple": 3}, "Did you mean 'n_people'"),
    ({"n_places": 1}, "n_places"),
    ({"n_objects": 9}, "n_objects"),
    ({"story_length": (6, 3)}, "story_length must be"),
    ({"story_length": (2, 3)}, "high >= 4"),
    ({"question_types": ("where",)}, "question_types"),
    ({"question_types": ("yes_no", "yes_no")}, "distinct"),
])
def test_bad_configs_are_rejected_with_the_reason(bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate(bad, BabiConfig)


def test_bad_arguments_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match=r"Expected `split` to be one of .*Did you mean 'train'\?"):
        make_split(CONFIG, "trian", 10)
    with pytest.raises(ValueError, match="Expected `n` to be a positive integer"):
        make_split(CONFIG, "train", -1)
    with pytest.raises(ValueError, match=r"Expected `style`.*Did you mean 'teacher'\?"):
        perturb_trace(HAND, 0, "teachr")
    with pytest.raises(TypeError, match="Expected `text` to be a str"):
        check_trace(HAND, b"answer kitchen")
    with pytest.raises(TypeError, match="Expected `example` to be a BabiExample"):
        write_trace(HAND.prompt)


def test_ten_thousand_examples_are_quick_to_draw():
    examples = make_split(CONFIG, "validation", 10_000)  # about 0.6 s; nothing timed here
    assert len(examples) == 10_000 and len({e.prompt for e in examples}) > 9_900
