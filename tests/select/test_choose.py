"""The selection rules (issue 17): each method keeps, per problem, the response its definition names, ties to the
first sampled; responses without a sentence are never kept; the random baseline is seeded."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdlens.select.choose import METHODS, ResponseScore, choose, classify, usable

response = st.builds(lambda n, t, s, tokens, ifd: ResponseScore(n, min(t, n), min(s, n - min(t, n)),
                                                                  n - min(t, n) - min(s, n - min(t, n)), tokens, ifd),
                     st.integers(0, 6), st.integers(0, 6), st.integers(0, 6), st.integers(0, 200),
                     st.one_of(st.floats(0.1, 3.0), st.just(math.nan)))
problems = st.lists(st.lists(response, min_size=1, max_size=5), min_size=1, max_size=8)

DEFINITIONS = {  # what each method maximises, written out again
    "teacher_guided": lambda r: r.teacher, "longest": lambda r: r.tokens,
    "highest_teacher_share": lambda r: r.teacher / r.n_sentences if r.n_sentences else math.nan,
    "fewest_teacher": lambda r: -r.teacher, "ifd": lambda r: r.ifd}


@pytest.mark.parametrize("method", sorted(DEFINITIONS))
@given(problems)
def test_each_method_keeps_the_first_response_with_the_best_key(method, found):
    for responses, picked in zip(found, choose(method, found), strict=True):
        candidates = [j for j, r in enumerate(responses) if r.n_sentences]
        if not candidates:
            assert picked is None
            continue
        keys = {j: DEFINITIONS[method](responses[j]) for j in candidates}
        defined = [j for j in candidates if not math.isnan(keys[j])]
        if not defined:
            assert picked == candidates[0]
            continue
        best = max(keys[j] for j in defined)
        assert picked == min(j for j in defined if keys[j] == best)


@given(problems, st.integers(0, 10))
def test_random_keeps_a_response_with_a_sentence_and_repeats_with_its_seed(found, seed):
    picked = choose("random", found, seed=seed)
    assert picked == choose("random", found, seed=seed)
    for responses, j in zip(found, picked, strict=True):
        assert (j is None) == (not any(r.n_sentences for r in responses))
        assert j is None or responses[j].n_sentences > 0


@given(problems)
def test_every_method_keeps_one_response_of_every_usable_problem(found):
    for method in METHODS:
        assert [j is not None for j in choose(method, found)] == usable(found)


def test_random_draws_differ_between_seeds():
    found = [[ResponseScore(1, 0, 0, 1, 5, 1.0)] * 4 for _ in range(40)]
    assert choose("random", found, seed=0) != choose("random", found, seed=1)


def test_sentences_are_classed_by_their_teacher_student_margin():
    assert classify([0.9, 0.2, 0.5, 0.61, math.nan], [0.5, 0.8, 0.55, 0.5, 0.5], 0.1) == [
        "teacher", "student", "common", "teacher", None]


def test_an_unknown_method_is_named():
    with pytest.raises(ValueError, match=r"Expected `method` to be one of 'teacher_guided', 'random'"):
        choose("teacher", [[ResponseScore(1, 1, 0, 0, 3, 1.0)]])
