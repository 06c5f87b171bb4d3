"""Word overlap between texts: BLEU and ROUGE-L, for comparing a student's reasoning trace with the teacher's.

Traces are compared word by word: every text is split on runs of whitespace (``str.split()``), with no
lowercasing and no punctuation splitting, so "x=3," is one token. Normalise the texts first if that matters (the
same choice as ``sacrebleu`` with ``tokenize="none"``, which the tests use as an oracle). Scores are in [0, 1],
not sacrebleu's [0, 100].
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from kdlens import validation as C

SMOOTHING = ("none", "add1", "floor")
_FLOOR = 0.1  # sacrebleu's default floor value (Chen & Cherry 2014, method 1)


def _check_text(x, name: str) -> str:
    if not isinstance(x, str):
        C.fail(name, "a str", type(x).__name__, error=TypeError)
    return x


def _check_texts(x, name: str, fix: str) -> list[str]:
    if isinstance(x, str) or not isinstance(x, Sequence):
        C.fail(name, "a list of str", type(x).__name__, fix, error=TypeError)
    if len(x) < 1:
        C.fail(name, "non-empty", "0 texts")
    for i, text in enumerate(x):
        _check_text(text, f"{name}[{i}]")
    return list(x)


def _check_references(references, n: int) -> list[list[str]]:
    """One str, or a non-empty list of str, per hypothesis -> a list of reference lists."""
    if isinstance(references, str) or not isinstance(references, Sequence):
        C.fail("references", "a list with one reference (str) or a list of references per hypothesis",
               type(references).__name__, error=TypeError)
    if len(references) != n:
        C.fail("hypotheses` and `references", "aligned (one entry per hypothesis in each)",
               f"{n} and {len(references)}", "Give each hypothesis its reference, or its list of references.")
    out = []
    for i, refs in enumerate(references):
        if isinstance(refs, str):
            refs = [refs]
        elif not isinstance(refs, Sequence):
            C.fail(f"references[{i}]", "a str or a list of str", type(refs).__name__, error=TypeError)
        elif len(refs) == 0:
            C.fail(f"references[{i}]", "at least one reference", "an empty list")
        for j, ref in enumerate(refs):
            _check_text(ref, f"references[{i}][{j}]")
        out.append(list(refs))
    return out


def _check_order(max_order) -> int:
    return C.check_int(max_order, "max_order", 1, "4 is BLEU's standard order.")


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    """Counts of every n-gram of the tokens, 1 <= n <= max_order (keys are token tuples)."""
    return Counter(tuple(tokens[i:i + k]) for k in range(1, max_order + 1) for i in range(len(tokens) - k + 1))


def _segment_stats(hypothesis: str, references: list[str], max_order: int):
    """(hypothesis length, effective reference length, clipped matches per order, hypothesis n-grams per order)."""
    hyp = hypothesis.split()
    ref_tokens = [r.split() for r in references]
    # Clip each hypothesis n-gram count at its largest count in any one reference.
    max_ref = Counter()
    for tokens in ref_tokens:
        max_ref |= _ngrams(tokens, max_order)  # | keeps the max of each count
    matches, totals = [0] * max_order, [0] * max_order
    for gram, count in _ngrams(hyp, max_order).items():
        totals[len(gram) - 1] += count
        matches[len(gram) - 1] += min(count, max_ref[gram])
    # Effective reference length: the reference closest in length to the hypothesis, the shorter one on a tie.
    ref_len = min((len(t) for t in ref_tokens), key=lambda r: (abs(r - len(hyp)), r))
    return len(hyp), ref_len, matches, totals


def _bleu_from_stats(hyp_len: int, ref_len: int, matches: list[int], totals: list[int], smooth: str) -> float:
    if not any(matches):  # nothing matches: 0 under every smoothing (as sacrebleu)
        return 0.0
    log_precisions = []
    for k, (m, t) in enumerate(zip(matches, totals, strict=True), start=1):
        if smooth == "add1" and k > 1:  # Lin & Och (2004): add one to the matches and the total for n > 1
            m, t = m + 1, t + 1
        if t == 0:  # the hypotheses hold no n-grams of this order: the precision is undefined, BLEU is 0
            return 0.0
        if m == 0:
            if smooth != "floor":
                return 0.0
            log_precisions.append(math.log(_FLOOR / t))
        else:
            log_precisions.append(math.log(m / t))
    # Brevity penalty over the corpus: exp(1 - r / c) when the hypotheses are shorter than the references.
    brevity = 1.0 if hyp_len >= ref_len else math.exp(1.0 - ref_len / hyp_len)
    return brevity * math.exp(math.fsum(log_precisions) / len(log_precisions))


def bleu(hypotheses, references, max_order: int = 4, smooth: str = "none") -> float:
    """Corpus BLEU (Papineni et al., "BLEU: a method for automatic evaluation of machine translation", ACL 2002).

    Over all hypotheses together: the modified precision ``p_k`` of order k is the number of hypothesis k-grams,
    each count clipped at its largest count in any one of that hypothesis's references, over the number of
    hypothesis k-grams; ``BLEU = BP * exp(mean_k log p_k)`` for k = 1..max_order, with the brevity penalty
    ``BP = min(1, exp(1 - r / c))``, c the total hypothesis length and r the sum over hypotheses of the reference
    length closest to the hypothesis's (the shorter on a tie). Texts are split on whitespace (module docstring).

    Smoothing, as sacrebleu implements it:

    * ``"none"``: any ``p_k = 0`` makes BLEU 0 (corpus BLEU as Papineni et al. define it).
    * ``"add1"``: Lin & Och (2004) add-one: for k > 1, one is added to the clipped matches and to the total.
    * ``"floor"``: a zero count of matches becomes 0.1 (Chen & Cherry 2014, method 1).

    Under every smoothing BLEU is 0 when no hypothesis token matches, and when the hypotheses hold no k-gram of
    some order k (all shorter than max_order words without add-one).

    Parameters
    ----------
    hypotheses : list of n >= 1 str
    references : list of n entries, each a str or a non-empty list of str
        The reference(s) of each hypothesis. Note the layout: per hypothesis, as in NLTK; sacrebleu's
        ``corpus_bleu(hyps, [refs_1, refs_2])`` takes reference *streams* instead.
    max_order : int >= 1
    smooth : "none" | "add1" | "floor"

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
    1.0
    >>> round(bleu(["the cat sat on a mat"], ["the cat sat on the mat"], max_order=2), 4)  # sqrt(5/6 * 3/5)
    0.7071
    """
    max_order = _check_order(max_order)
    C.check_choice(smooth, "smooth", SMOOTHING)
    hyps = _check_texts(hypotheses, "hypotheses", "For a single hypothesis use sentence_bleu or wrap it in a list.")
    refs = _check_references(references, len(hyps))
    hyp_len = ref_len = 0
    matches, totals = [0] * max_order, [0] * max_order
    for hypothesis, its_refs in zip(hyps, refs, strict=True):
        h, r, m, t = _segment_stats(hypothesis, its_refs, max_order)
        hyp_len, ref_len = hyp_len + h, ref_len + r
        matches = [a + b for a, b in zip(matches, m, strict=True)]
        totals = [a + b for a, b in zip(totals, t, strict=True)]
    return _bleu_from_stats(hyp_len, ref_len, matches, totals, smooth)


def sentence_bleu(hypothesis: str, references, max_order: int = 4, smooth: str = "add1") -> float:
    """BLEU of one hypothesis against its reference(s): :func:`bleu` on a corpus of one.

    Unsmoothed BLEU of a short text is 0 whenever it shares no 4-gram with the reference, so the default here is
    Lin & Och's add-one smoothing, which they proposed for sentence-level BLEU. All orders 1..max_order always
    count (sacrebleu's ``effective_order=False``).

    Parameters
    ----------
    hypothesis : str
    references : str or non-empty list of str
    max_order, smooth : as in :func:`bleu`

    Examples
    --------
    >>> round(sentence_bleu("a b c d", "a b c e"), 4)  # (3/4 * 3/4 * 2/3 * 1/2) ** (1/4)
    0.658
    """
    _check_text(hypothesis, "hypothesis")
    if not isinstance(references, str):
        references = _check_texts(references, "references", "Pass a str or a list of str.")
    return bleu([hypothesis], [references], max_order=max_order, smooth=smooth)


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, O(len(a) len(b)) time and O(len(b)) memory."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F-measure (Lin, "ROUGE: a package for automatic evaluation of summaries", 2004), beta = 1.

    With L the length of the longest common subsequence of the two token sequences (in order, not necessarily
    contiguous), precision ``P = L / len(hypothesis)``, recall ``R = L / len(reference)`` and
    ``F = 2 P R / (P + R)``. 0.0 when L = 0, including when either text has no tokens. Symmetric in its
    arguments. Texts are split on whitespace (module docstring).

    Parameters
    ----------
    hypothesis, reference : str

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> rouge_l("the cat was found under the bed", "the cat was under the bed")
    0.9230769230769231
    """
    hyp, ref = _check_text(hypothesis, "hypothesis").split(), _check_text(reference, "reference").split()
    lcs = _lcs_length(hyp, ref)
    if lcs == 0:
        return 0.0
    return 2.0 * lcs / (len(hyp) + len(ref))  # = 2PR / (P + R) with P = L / |hyp|, R = L / |ref|
