"""Sentence provenance (issue 17, the probe): one pass per model per trajectory equals re-scoring every sentence on
its own prefix, for a word-level Llama (the lab's tokenizer) and a character-level Qwen2; tokens go to the sentence
their first character lies in; the categories follow their definitions in order."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kdlens.probes.provenance import (
    CATEGORIES,
    categorize,
    category_shares,
    grouped_shares,
    mean_probabilities,
    position_shares,
    segment,
    sensitivity,
    sentence_probabilities,
    sentence_tokens,
    teacher_share_correlation,
    thirds,
)
from kdlens.tasks.text import split_sentences
from tests.probes.test_lm_representations import char_lm, word_lm

PROMPTS = ["a is 3 . b is a plus 4 , so b is 7 .", "mary went to the kitchen ."]
TRAJECTORIES = [" the answer is 7 . so b is 7 .\n a is 3 .", " mary went to the kitchen . the answer is 7 ."]


def naive(model, prompt: str, trajectory: str, spans, per: str = "token") -> list[float]:
    """Each sentence scored by its own forward pass over the tokens up to its last one (the model's own forward,
    full logits): what one pass per trajectory must equal."""
    (encoding,) = model.encode([prompt + trajectory])
    seam = len(prompt)
    texty = [t for t, (a, b) in enumerate(encoding.offsets) if b > a]
    first = next(t for t in texty if encoding.offsets[t][1] > seam)
    tokens = list(range(first, texty[-1] + 1))
    owners = sentence_tokens([(max(encoding.offsets[t][0] - seam, 0), 0) for t in tokens], spans, trajectory)
    out = []
    for i, (start, end) in enumerate(spans):
        mine = [t for t, owner in zip(tokens, owners, strict=True) if owner == i]
        ids = torch.tensor([encoding.ids[: mine[-1] + 1]])
        with torch.no_grad():
            logprobs = model.model(input_ids=ids).logits[0].double().log_softmax(-1)  # (T, V)
        total = sum(float(logprobs[t - 1, encoding.ids[t]]) for t in mine)
        out.append(math.exp(total / (len(mine) if per == "token" else end - start)))
    return out


@pytest.mark.parametrize("make", [word_lm, char_lm], ids=["word-level llama", "character-level qwen2"])
@pytest.mark.parametrize("per", ["token", "character"])
def test_one_pass_per_trajectory_equals_rescoring_each_sentence(make, per):
    model = make()
    model.model.eval()
    spans = [split_sentences(t)[1] for t in TRAJECTORIES]
    got = sentence_probabilities(model, PROMPTS, TRAJECTORIES, spans, per=per, batch_size=2)
    for p, prompt, trajectory, sentences in zip(got, PROMPTS, TRAJECTORIES, spans, strict=True):
        assert p.dtype == torch.float64 and len(p) == len(sentences) >= 2
        assert p.tolist() == pytest.approx(naive(model, prompt, trajectory, sentences, per), rel=1e-5)


def test_think_markers_are_boundaries_and_belong_to_no_sentence():
    text = "<think>\nx = 1. y = 2\n</think>\nso 3.\n"
    assert [text[a:b] for a, b in segment(text)] == ["x = 1.", "y = 2", "so 3."]
    assert [text[a:b] for a, b in segment(text, think=None)] == ["<think>", "x = 1.", "y = 2", "</think>", "so 3."]
    lines = "a. b; c\nd"
    assert [lines[a:b] for a, b in segment(lines, terminators="\n")] == ["a. b; c", "d"]
    with pytest.raises(ValueError, match=r"Expected `think` to be two non-empty marker strings"):
        segment(text, think=("<think>", ""))
    with pytest.raises(ValueError, match=r"Expected `terminators` to be a non-empty str"):
        segment(text, terminators="")


def test_a_token_belongs_to_the_sentence_its_first_character_lies_in():
    text = "x = 1.\n y = 2. done"
    _, spans = split_sentences(text)  # "x = 1." (0, 6), "y = 2." (8, 14), "done" (15, 19)
    offsets = [(0, 1), (5, 7), (7, 9), (13, 16), (16, 19), (19, 20)]  # ".\n" and " y" straddle, "." + " d" too
    assert sentence_tokens(offsets, spans, text) == [0, 0, 1, 1, 2, -1]


@given(st.lists(st.tuples(st.sampled_from(["", " ", "\n ", "#", " # ", "</think>\n"]), st.integers(1, 6)),
                min_size=1, max_size=6),
       st.sampled_from(["", "\n", " #"]), st.lists(st.integers(1, 5), min_size=1, max_size=40))
def test_every_token_has_the_sentence_its_first_character_opens_or_lies_in(sentences, tail, token_lengths):
    text, spans = "", []
    for gap, length in sentences:  # gaps of whitespace, of other text, or of both
        text += gap
        spans.append((len(text), len(text) + length))
        text += "a" * length
    text += tail
    offsets, at = [], 0
    for length in token_lengths:
        if at >= len(text):
            break
        offsets.append((at, min(at + length, len(text))))
        at += length
    for (start, _), owner in zip(offsets, sentence_tokens(offsets, spans, text), strict=True):
        inside = [i for i, (a, b) in enumerate(spans) if a <= start < b]
        opens = [i for i, (a, _) in enumerate(spans) if start < a and text[start:a].isspace()]
        assert owner == (inside or opens or [-1])[0]


probability = st.floats(0, 1, allow_nan=False)


@given(st.lists(st.tuples(probability, probability, probability), min_size=1, max_size=20),
       st.floats(0, 0.3), st.floats(0, 0.3))
def test_categories_follow_their_definitions_in_order(triples, alpha, beta):
    t, s, d = (torch.tensor(column, dtype=torch.float64) for column in zip(*triples, strict=True))
    for (pt, ps, pd), category in zip(triples, categorize(t, s, d, alpha, beta), strict=True):
        assert category in CATEGORIES
        shared = abs(ps - pd) <= alpha and abs(pt - pd) <= alpha and abs(pt - ps) <= alpha
        assert (category == "shared") == shared
        if not shared:
            expected = ("teacher" if pt - ps > beta else "student" if ps - pt > beta
                        else "boosted" if pd - max(pt, ps) > alpha else "other")
            assert category == expected


def test_a_sentence_without_a_token_of_its_own_is_not_categorised():
    nan = torch.tensor([math.nan])
    assert categorize(nan, torch.tensor([0.5]), torch.tensor([0.5])) == [None]


@pytest.mark.parametrize("kwargs, message", [
    ({"per": "word"}, r"Expected `per` to be one of 'token', 'character'"),
    ({"spans": [[(0, 3)]]}, r"one entry per trajectory"),
])
def test_bad_input_to_sentence_probabilities(kwargs, message):
    arguments = {"model": word_lm(), "prompts": PROMPTS, "trajectories": TRAJECTORIES,
                 "spans": [split_sentences(t)[1] for t in TRAJECTORIES], **kwargs}
    with pytest.raises(ValueError, match=message):
        sentence_probabilities(**arguments)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, "0.1", True])
def test_a_threshold_outside_zero_to_one_is_refused(alpha):
    with pytest.raises(ValueError, match=r"Expected `alpha` to be a number in \[0, 1\].*beta = 0.1"):
        categorize(torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([0.5]), alpha=alpha)


@given(st.integers(1, 60))
def test_thirds_split_a_trajectory_in_order_and_symmetrically(n):
    places = thirds(n)
    assert places == sorted(places, key=["first", "middle", "last"].index)  # in order
    mirror = {"first": "last", "middle": "middle", "last": "first"}
    assert [mirror[p] for p in reversed(places)] == places  # the same read from the end
    assert all(abs(places.count(p) - n / 3) <= 1 for p in ("first", "middle", "last"))  # a third each, +- 1


@given(st.lists(st.lists(st.sampled_from([*CATEGORIES, None]), max_size=8), min_size=1, max_size=12))
def test_shares_are_pooled_counts_and_their_intervals_hold_them(categories):
    found = category_shares(categories, n_resamples=200)
    flat = [c for row in categories for c in row if c is not None]
    assert found["n_sentences"] == len(flat) and found["n_trajectories"] == len(categories)
    for k in CATEGORIES:
        if not flat:
            assert found[k]["share"] is None
            continue
        assert found[k]["share"] == pytest.approx(flat.count(k) / len(flat))  # an independent count
        if len(categories) >= 2:
            assert 0 <= found[k]["low"] <= found[k]["high"] <= 1
    if flat:
        assert sum(found[k]["share"] for k in CATEGORIES) == pytest.approx(1.0)


def test_the_interval_resamples_trajectories_not_sentences():
    one_sided = [["teacher"] * 10] * 5 + [["student"] * 10] * 5  # 10 trajectories, each all one category
    found = category_shares(one_sided, n_resamples=2000)
    assert found["teacher"]["share"] == 0.5
    assert found["teacher"]["high"] - found["teacher"]["low"] > 0.4  # 10 clusters: wide, not as from 100 sentences


TRAJECTORY_CATEGORIES = [["teacher", "teacher", "other"], ["student"],
                         ["teacher", "shared", "boosted", None, "student"], ["shared", "student"]]


def test_position_shares_count_each_third_independently():
    found = position_shares(TRAJECTORY_CATEGORIES, n_resamples=100)
    first = [row[i] for row in TRAJECTORY_CATEGORIES for i, w in enumerate(thirds(len(row))) if w == "first"]
    first = [c for c in first if c is not None]
    assert found["first"]["n_sentences"] == len(first)
    assert found["first"]["teacher"]["share"] == pytest.approx(first.count("teacher") / len(first))
    # last thirds: "other" (of 3), none (of 1: its middle), None and "student" (of 5: thirds 0 0 1 2 2), "student"
    assert found["last"]["n_sentences"] == 3 and found["last"]["student"]["share"] == pytest.approx(2 / 3)


def test_grouped_shares_are_the_shares_of_each_group():
    labels = [True, False, True, False]
    found = grouped_shares(TRAJECTORY_CATEGORIES, labels, n_resamples=100)
    assert list(found) == ["True", "False"]
    assert found["True"] == category_shares([TRAJECTORY_CATEGORIES[0], TRAJECTORY_CATEGORIES[2]], n_resamples=100)
    with pytest.raises(ValueError, match=r"one label per trajectory \(4\)"):
        grouped_shares(TRAJECTORY_CATEGORIES, labels[:3])


def test_the_teacher_share_correlation_is_pearson_over_problems():
    import numpy as np

    correct = [True, False, True, False]
    shares = [2 / 3, 0.0, 1 / 4, 0.0]
    assert teacher_share_correlation(TRAJECTORY_CATEGORIES, correct) == pytest.approx(
        float(np.corrcoef(shares, [1, 0, 1, 0])[0, 1]))
    assert teacher_share_correlation(TRAJECTORY_CATEGORIES, [True] * 4) is None  # correctness does not vary
    with pytest.raises(ValueError, match=r"one flag per trajectory"):
        teacher_share_correlation(TRAJECTORY_CATEGORIES, correct[:1])


def test_mean_probabilities_per_category_and_model():
    categories = [["teacher", "shared"], ["teacher"]]
    p = {"teacher": [torch.tensor([0.9, 0.5]), torch.tensor([0.7])],
         "student": [torch.tensor([0.2, 0.5]), torch.tensor([0.4])]}
    found = mean_probabilities(categories, p)
    assert found["teacher"] == pytest.approx({"teacher": 0.8, "student": 0.3})
    assert found["shared"] == {"teacher": 0.5, "student": 0.5} and found["boosted"] == {"teacher": None,
                                                                                         "student": None}
    with pytest.raises(ValueError, match=r"Expected `probabilities\['student'\]` to be one tensor per trajectory"):
        mean_probabilities(categories, {"student": p["student"][:1]})


@given(st.lists(st.tuples(probability, probability, probability), min_size=1, max_size=30))
def test_sensitivity_shares_move_as_the_thresholds_say(triples):
    t, s, d = (torch.tensor(column, dtype=torch.float64) for column in zip(*triples, strict=True))
    grid = sensitivity({"teacher": [t], "student": [s], "distilled": [d]}, [0.0, 0.05, 0.2], [0.05, 0.1, 0.3])
    at_defaults = category_shares([categorize(t, s, d)])
    for k in CATEGORIES:
        assert grid["shares"][k][1][1] == pytest.approx(at_defaults[k]["share"])  # (ALPHA, BETA) on the grid
    shared = grid["shares"]["shared"]
    assert all(shared[i][j] <= shared[i + 1][j] + 1e-12 for i in range(2) for j in range(3))  # looser alpha
    directed = [[grid["shares"]["teacher"][i][j] + grid["shares"]["student"][i][j] for j in range(3)]
                for i in range(3)]
    assert all(directed[i][j] >= directed[i][j + 1] - 1e-12 for i in range(3) for j in range(2))  # stricter beta


def test_sensitivity_names_a_missing_model():
    with pytest.raises(ValueError, match=r"'teacher', 'student' and 'distilled'.*\['distilled'\]"):
        sensitivity({"teacher": [], "student": []}, [0.05], [0.1])


def test_no_trajectory_gives_no_probabilities():
    assert sentence_probabilities(word_lm(), [], [], []) == []
