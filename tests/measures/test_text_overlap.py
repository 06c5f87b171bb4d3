"""BLEU against hand-computed cases and sacrebleu (the oracle); ROUGE-L against a brute-force LCS."""

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlens import measures as M

# -- BLEU by hand ---------------------------------------------------------------------------------------------------


def test_identical_and_disjoint():
    assert M.bleu(["a b c d e"], ["a b c d e"]) == 1.0
    assert M.bleu(["a b c d"], ["e f g h"]) == 0.0
    assert M.bleu(["a b c d"], ["e f g h"], smooth="floor") == 0.0  # nothing matches: 0 under any smoothing
    assert M.rouge_l("a b", "c d") == 0.0


def test_clipped_unigram_precision():
    # Papineni et al.'s example: "the" seven times is clipped at its count in the richer reference, 2.
    hyp = ["the the the the the the the"]
    refs = [["the cat is on the mat", "there is a cat on the mat"]]
    assert M.bleu(hyp, refs, max_order=1) == pytest.approx(2 / 7)


def test_geometric_mean_of_precisions():
    # p1 = 5/6 ("a" unmatched, "the" once in the hypothesis), p2 = 3/5; equal lengths so BP = 1.
    assert M.bleu(["the cat sat on a mat"], ["the cat sat on the mat"], max_order=2) == pytest.approx(
        math.sqrt(5 / 6 * 3 / 5))
    # p3 = 2/4 ("the cat sat", "cat sat on"), p4 = 1/3 ("the cat sat on").
    assert M.bleu(["the cat sat on a mat"], ["the cat sat on the mat"]) == pytest.approx(
        (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert M.bleu(["the cat sat in a mat"], ["the cat sat on the mat"]) == 0.0  # no matching 4-gram, no smoothing


def test_brevity_penalty_is_over_the_corpus():
    # Each hypothesis a prefix of its reference: every precision is 1, c = 2 + 3, r = 4 + 3.
    hyps, refs = ["a b", "c d e"], ["a b x y", "c d e"]
    assert M.bleu(hyps, refs, max_order=1) == pytest.approx(math.exp(1 - 7 / 5))
    assert M.bleu(["a b c"], ["a b c d e f"], max_order=2) == pytest.approx(math.exp(1 - 6 / 3))
    assert M.bleu(["a b c d e f"], ["a b c"], max_order=1) == pytest.approx(0.5)  # longer: no penalty, p1 = 1/2


def test_closest_reference_length_shorter_on_a_tie():
    # Hypothesis of 3 words; references of 2 and 4 words are equally close: r = 2, so no brevity penalty.
    assert M.bleu(["a b c"], [["a b", "a b c d"]], max_order=1) == 1.0
    # Closest is 5 (|3 - 5| < |3 - 7|): BP = exp(1 - 5/3).
    assert M.bleu(["a b c"], [["a b c d e", "a b c d e f g"]], max_order=1) == pytest.approx(math.exp(1 - 5 / 3))


def test_smoothing_by_hand():
    # "a b c d" vs "a b c e": matches/totals per order 3/4, 2/3, 1/2, 0/1.
    hyp, ref = ["a b c d"], ["a b c e"]
    assert M.bleu(hyp, ref) == 0.0
    assert M.bleu(hyp, ref, smooth="add1") == pytest.approx((3 / 4 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    assert M.bleu(hyp, ref, smooth="floor") == pytest.approx((3 / 4 * 2 / 3 * 1 / 2 * 0.1 / 1) ** 0.25)
    assert M.sentence_bleu("a b c d", "a b c e") == M.bleu(hyp, ref, smooth="add1")
    assert M.sentence_bleu("a b c d", ["a b c e"], smooth="none") == 0.0


def test_whitespace_tokens():
    assert M.bleu(["  a\tb\nc  d "], ["a b c d"]) == 1.0
    assert M.bleu(["A b c d"], ["a b c d"], max_order=1) == 0.75  # no lowercasing
    assert M.bleu(["a, b c d"], ["a b c d"], max_order=1) == 0.75  # punctuation stays on its word


def test_short_hypotheses_have_no_higher_order_ngrams():
    assert M.bleu(["a b"], ["a b"]) == 0.0  # no 3-grams: undefined precision, BLEU 0 (as sacrebleu)
    assert M.bleu(["a b"], ["a b"], max_order=2) == 1.0
    assert M.bleu([""], ["a b"]) == 0.0


# -- BLEU against sacrebleu -----------------------------------------------------------------------------------------

SACREBLEU_SMOOTHING = {"none": "none", "add1": "add-k", "floor": "floor"}
words = st.lists(st.sampled_from("a b c d e the".split()), max_size=12).map(" ".join)


def sacrebleu_score(hyps, ref_streams, max_order, smooth, sentence=False):
    metrics = pytest.importorskip("sacrebleu.metrics")
    metric = metrics.BLEU(tokenize="none", smooth_method=SACREBLEU_SMOOTHING[smooth], max_ngram_order=max_order,
                          effective_order=False, force=True)
    if sentence:
        return metric.sentence_score(hyps, ref_streams).score / 100
    return metric.corpus_score(hyps, ref_streams).score / 100


@settings(max_examples=150, deadline=None)
@given(st.data(), st.integers(1, 5), st.sampled_from(list(SACREBLEU_SMOOTHING)), st.integers(1, 3))
def test_corpus_bleu_matches_sacrebleu(data, max_order, smooth, n_refs):
    n = data.draw(st.integers(1, 5))
    hyps = [data.draw(words) for _ in range(n)]
    refs = [[data.draw(words) for _ in range(n_refs)] for _ in range(n)]  # per hypothesis
    streams = [list(stream) for stream in zip(*refs, strict=True)]  # sacrebleu: one stream per reference set
    expected = sacrebleu_score(hyps, streams, max_order, smooth)
    assert M.bleu(hyps, refs, max_order=max_order, smooth=smooth) == pytest.approx(expected, abs=1e-9)
    if n_refs == 1:
        assert M.bleu(hyps, [r[0] for r in refs], max_order=max_order, smooth=smooth) == pytest.approx(
            expected, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(words, st.lists(words, min_size=1, max_size=3), st.sampled_from(list(SACREBLEU_SMOOTHING)))
def test_sentence_bleu_matches_sacrebleu(hyp, refs, smooth):
    expected = sacrebleu_score(hyp, refs, 4, smooth, sentence=True)
    assert M.sentence_bleu(hyp, refs, smooth=smooth) == pytest.approx(expected, abs=1e-9)


def test_corpus_bleu_of_a_larger_corpus_matches_sacrebleu():
    import random

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(30)]
    refs = [" ".join(rng.choices(vocab, k=rng.randint(5, 30))) for _ in range(200)]
    hyps = [" ".join(w if rng.random() < 0.7 else rng.choice(vocab) for w in r.split()[: rng.randint(3, 35)])
            for r in refs]
    for smooth in SACREBLEU_SMOOTHING:
        expected = sacrebleu_score(hyps, [refs], 4, smooth)
        assert 0.05 < expected < 0.95
        assert M.bleu(hyps, refs, smooth=smooth) == pytest.approx(expected, abs=1e-12)


# -- ROUGE-L --------------------------------------------------------------------------------------------------------


def brute_force_lcs(a, b):
    """Longest subsequence of ``a`` (tried longest first, by index subsets) that is also a subsequence of ``b``."""
    def is_subsequence(seq, of):
        it = iter(of)
        return all(any(x == y for y in it) for x in seq)

    for size in range(len(a), 0, -1):
        if any(is_subsequence([a[i] for i in idx], b) for idx in itertools.combinations(range(len(a)), size)):
            return size
    return 0


def test_rouge_l_by_hand():
    # LCS "the cat was under the bed" = 6 of 7 and 6 tokens: P = 6/7, R = 1, F = 2PR / (P + R) = 12/13.
    assert M.rouge_l("the cat was found under the bed", "the cat was under the bed") == pytest.approx(12 / 13)
    assert M.rouge_l("a b c", "c b a") == pytest.approx(1 / 3)  # LCS 1: P = R = 1/3
    assert M.rouge_l("a b c d", "a c") == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    assert M.rouge_l("x y", "x y") == 1.0
    assert M.rouge_l("", "a") == M.rouge_l("", "") == 0.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from("abc"), max_size=8), st.lists(st.sampled_from("abcd"), max_size=8))
def test_rouge_l_matches_brute_force_lcs(a, b):
    lcs = brute_force_lcs(a, b)
    p, r = (lcs / len(a) if a else 0.0), (lcs / len(b) if b else 0.0)
    expected = 2 * p * r / (p + r) if lcs else 0.0
    assert M.rouge_l(" ".join(a), " ".join(b)) == pytest.approx(expected)
    assert M.rouge_l(" ".join(b), " ".join(a)) == pytest.approx(expected)
