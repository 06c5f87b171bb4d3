"""Where each sentence of a distilled model's trace came from: the teacher, the original student, both, or the
distillation itself (Liu et al. 2025, "Where Did This Sentence Come From? Tracing Provenance in LLM Reasoning
Distillation").

Each sentence of a trajectory the distilled model D wrote is scored under the teacher T, the original student S and
D, each given the same preceding text (the prompt and the trajectory before the sentence):
``p = exp(mean log-probability of the sentence's tokens)``, the paper's per-token geometric mean, or with
``per="character"`` ``exp(sum / the sentence's characters)``, which does not depend on how finely a tokenizer cuts
the text (the two differ most between models with different tokenizers, where the per-token mean of a word cut into
many tokens is pulled towards the easy later pieces).

One forward pass per model per trajectory: every sentence shares the growing prefix, so the model scores the whole
trajectory once (:meth:`~kdlens.subjects.LanguageModel.score`, batched, bounded memory at real vocabularies) and each
token's log-probability goes to its sentence. Tokenizers may differ: each model scores with its own tokens, mapped
to the sentences through character offsets. A token belongs to the sentence in which its first character lies;
whitespace just before a sentence counts with it (so " The" opens the next sentence), and a token that starts in
other text between sentences (a ``<think>`` marker) or after the last sentence (a trailing newline) belongs to none:
it is context, never scored. Sentences are cut by :func:`segment` (sentence punctuation and newlines; ``<think>``
markers are boundaries), configurable.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence

import torch

from kdlens import validation as V
from kdlens.tasks.answers import THINK
from kdlens.tasks.text import TERMINATORS, split_sentences

CATEGORIES = ("shared", "teacher", "student", "boosted", "other")
ALPHA, BETA = 0.05, 0.1  # BETA as in the paper; ALPHA (not given there) half of it: "within 5 points" reads as shared


def segment(text: str, terminators: str = TERMINATORS, think: tuple[str, str] | None = THINK
            ) -> list[tuple[int, int]]:
    """The sentences (actions) of a trajectory as (start, end) character spans, end exclusive: the text is cut after
    each of ``terminators`` (:func:`kdlens.tasks.text.split_sentences`: a decimal point is no end, surrounding
    whitespace is left out, a piece without a letter or digit is no sentence), and at each ``think`` marker
    (``<think>``, ``</think>`` by default; None: none), which belongs to no sentence, so no sentence runs across the
    start or the end of a reasoning block.

    >>> text = "<think>a = 1. b = 2</think> so 3."
    >>> [text[a:b] for a, b in segment(text)]
    ['a = 1.', 'b = 2', 'so 3.']
    """
    if think is not None and (len(think) != 2 or not all(isinstance(m, str) and m for m in think)):
        V.fail("think", "two non-empty marker strings, e.g. ('<think>', '</think>'), or None", repr(think))
    cuts = [0]  # alternating piece starts and ends: the markers lie between them
    if think is not None:
        marker = re.compile("|".join(re.escape(m) for m in sorted(set(think), key=len, reverse=True)))
        for found in marker.finditer(text):
            cuts += [found.start(), found.end()]
    cuts.append(len(text))
    spans = []
    for start, end in zip(cuts[::2], cuts[1::2], strict=True):
        spans += [(start + a, start + b) for a, b in split_sentences(text[start:end], terminators)[1]]
    return spans


def sentence_tokens(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]], text: str) -> list[int]:
    """The sentence each token belongs to (-1: none), from the tokens' (start, end) character offsets into ``text``
    and the sentences' spans in it (sorted, not overlapping): the sentence in which the token's first character
    lies, the whitespace just before a sentence counting as its own (" The" opens the next sentence). A token that
    starts in other text between sentences (a ``<think>`` marker, stray punctuation) or after the last belongs to
    none.

    >>> sentence_tokens([(0, 2), (2, 4), (4, 8), (8, 9)], [(0, 3), (4, 8)], "a b. cd.\\n")
    [0, 0, 1, -1]
    """
    ends = [end for _, end in spans]
    owned_from = []  # each sentence's first character, moved back over the whitespace before it
    for i, (start, _) in enumerate(spans):
        floor = ends[i - 1] if i else 0
        while start > floor and text[start - 1].isspace():
            start -= 1
        owned_from.append(start)
    out = []
    for start, _ in offsets:
        owner = bisect.bisect_right(ends, start)
        out.append(owner if owner < len(ends) and start >= owned_from[owner] else -1)
    return out


def sentence_probabilities(model, prompts: Sequence[str], trajectories: Sequence[str],
                           spans: Sequence[Sequence[tuple[int, int]]], per: str = "token",
                           batch_size: int = 16) -> list[torch.Tensor]:
    """Each sentence's probability under ``model`` given the prompt and the trajectory before it.

    Parameters
    ----------
    model : :class:`~kdlens.subjects.LanguageModel`
    prompts, trajectories : n texts each; the model reads ``prompt + trajectory``
    spans : per trajectory, its sentences' (start, end) character spans in the trajectory (sorted)
    per : ``"token"`` (exp of the mean token log-probability) or ``"character"`` (exp of the sum over the
        sentence's characters)
    batch_size : trajectories per forward pass

    Returns
    -------
    list of n float64 tensors, (sentences,) each, in [0, 1]; NaN for a sentence that got no token of its own
    """
    V.check_choice(per, "per", ("token", "character"))
    if not (len(prompts) == len(trajectories) == len(spans)):
        V.fail("prompts`, `trajectories` and `spans", "one entry per trajectory",
               f"{len(prompts)}, {len(trajectories)} and {len(spans)}")
    if not prompts:
        return []
    return probabilities_of(model.score(list(prompts), list(trajectories), batch_size=batch_size), trajectories,
                            spans, per)


def probabilities_of(scores: Sequence, trajectories: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                     per: str = "token") -> list[torch.Tensor]:
    """:func:`sentence_probabilities` from a model's scores of the trajectories already made (one
    :class:`~kdlens.subjects.lm.ContinuationScore` per trajectory, its prompt the context): for a caller that
    needs the scores for something else too."""
    V.check_choice(per, "per", ("token", "character"))
    if not scores:
        return []
    # every trajectory's tokens and sentences one after another: one set of tensor operations for all of them
    counts = torch.tensor([len(sentences) for sentences in spans])  # (n,) sentences per trajectory
    lengths = torch.tensor([len(score.offsets) for score in scores])  # (n,) scored tokens per trajectory
    owners = torch.tensor([owner for score, trajectory, sentences in zip(scores, trajectories, spans, strict=True)
                           for owner in sentence_tokens(score.offsets, sentences, trajectory)],
                          dtype=torch.long)  # (tokens,) each token's sentence in its trajectory, -1: none
    kept = owners >= 0
    owners = (owners + (counts.cumsum(0) - counts).repeat_interleave(lengths))[kept]  # ... among all sentences
    n = int(counts.sum())
    totals = torch.zeros(n, dtype=torch.float64).index_add_(
        0, owners, torch.cat([score.token_logprobs for score in scores]).double()[kept])  # (n,) summed log-probs
    tokens = torch.bincount(owners, minlength=n)  # (n,) tokens each
    size = tokens.double() if per == "token" else torch.tensor([b - a for sentences in spans for a, b in sentences],
                                                                dtype=torch.float64)
    probabilities = torch.where(tokens > 0, (totals / size.clamp_min(1)).exp(), math.nan)  # (n,)
    return [p.clone() for p in probabilities.split(counts.tolist())]  # each trajectory's, a tensor of its own


def categorize(p_teacher: torch.Tensor, p_student: torch.Tensor, p_distilled: torch.Tensor, alpha: float = ALPHA,
               beta: float = BETA) -> list[str | None]:
    """Each sentence's category, the first that holds of: **shared** (every two of the three probabilities within
    ``alpha``), **teacher** (p_T - p_S > ``beta``), **student** (p_S - p_T > ``beta``), **boosted** (|p_T - p_S| <=
    ``beta`` and p_D above both by more than ``alpha``), else **other**; None where a probability is NaN (a sentence
    that got no token of its own).

    >>> categorize(torch.tensor([0.9, 0.2, 0.5, 0.5]), torch.tensor([0.5, 0.8, 0.5, 0.5]),
    ...            torch.tensor([0.9, 0.5, 0.9, 0.52]))
    ['teacher', 'student', 'boosted', 'shared']
    """
    alpha, beta = check_threshold(alpha, "alpha"), check_threshold(beta, "beta")
    out: list[str | None] = []
    for t, s, d in zip(p_teacher.tolist(), p_student.tolist(), p_distilled.tolist(), strict=True):
        if math.isnan(t) or math.isnan(s) or math.isnan(d):
            out.append(None)
        elif max(abs(s - d), abs(t - d), abs(t - s)) <= alpha:
            out.append("shared")
        elif t - s > beta:
            out.append("teacher")
        elif s - t > beta:
            out.append("student")
        elif d > max(t, s) + alpha:
            out.append("boosted")
        else:
            out.append("other")
    return out


def check_threshold(value, name: str) -> float:
    """``value`` as a float in [0, 1] (a difference of probabilities), else one clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        V.fail(name, "a number in [0, 1] (a difference of two probabilities)", repr(value),
               f"The paper uses beta = {BETA}; kdlens's default alpha is {ALPHA}.")
    return float(value)


def thirds(n_sentences: int) -> list[str]:
    """Each sentence's place in its trajectory: the ``first``, ``middle`` or ``last`` third, by where its middle
    falls (sentence i of n: third floor(3 (i + 1/2) / n)), so the split is symmetric: a lone sentence is in the
    middle, two are first and last.

    >>> thirds(4), thirds(2)
    (['first', 'middle', 'middle', 'last'], ['first', 'last'])
    """
    return [("first", "middle", "last")[(6 * i + 3) // (2 * n_sentences)] for i in range(n_sentences)]


def category_shares(categories: Sequence[Sequence[str | None]], n_resamples: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict:
    """The share of sentences in each category, pooled over trajectories, with percentile-bootstrap intervals that
    resample whole trajectories (sentences of one trajectory are not independent).

    Parameters
    ----------
    categories : per trajectory, each sentence's category (None: not categorised, left out)

    Returns
    -------
    dict: ``n_sentences``, ``n_trajectories``, and per category ``{"share", "low", "high"}`` (None without
    sentences; no interval from fewer than two trajectories)
    """
    from kdlens.measures.resampling import bootstrap_indices, percentile_interval

    counts = torch.tensor([[sum(c == k for c in row) for k in CATEGORIES] for row in categories],
                          dtype=torch.float64).reshape(-1, len(CATEGORIES))  # (trajectories, categories)
    total = float(counts.sum())
    out: dict = {"n_sentences": int(total), "n_trajectories": len(categories)}
    if total == 0:
        return {**out, **{k: {"share": None, "low": None, "high": None} for k in CATEGORIES}}
    share = counts.sum(0) / total
    replicates = []
    if len(categories) >= 2:
        for rows in bootstrap_indices(len(categories), n_resamples, seed, chunk=256):
            drawn = counts[rows].sum(1)  # (r, categories)
            replicates.append(drawn / drawn.sum(-1, keepdim=True).clamp_min(1.0))
    draws = torch.cat(replicates) if replicates else None
    for j, k in enumerate(CATEGORIES):
        if draws is None:
            out[k] = {"share": float(share[j]), "low": None, "high": None}
        else:
            interval = percentile_interval(float(share[j]), draws[:, j], level)
            out[k] = {"share": interval.estimate, "low": interval.low, "high": interval.high}
    return out


def position_shares(categories: Sequence[Sequence[str | None]], **bootstrap) -> dict[str, dict]:
    """:func:`category_shares` of the sentences in the first, middle and last third of their trajectories
    (:func:`thirds`)."""
    return {third: category_shares([[c for c, where in zip(row, thirds(len(row)), strict=True) if where == third]
                                    for row in categories], **bootstrap)
            for third in ("first", "middle", "last")}


def grouped_shares(categories: Sequence[Sequence[str | None]], labels: Sequence, **bootstrap) -> dict[str, dict]:
    """:func:`category_shares` of the trajectories of each label (a right or wrong final answer, a difficulty, a
    task), in the order the labels first appear; keys are the labels as strings."""
    if len(labels) != len(categories):
        V.fail("labels", f"one label per trajectory ({len(categories)})", str(len(labels)))
    out: dict[str, dict] = {}
    for label in dict.fromkeys(labels):
        out[str(label)] = category_shares([row for row, mine in zip(categories, labels, strict=True) if mine == label],
                                          **bootstrap)
    return out


def teacher_share_correlation(categories: Sequence[Sequence[str | None]], correct: Sequence[bool]) -> float | None:
    """Pearson correlation, over problems, between a trajectory's share of teacher sentences and whether its final
    answer is right (the point-biserial correlation); None when either side does not vary or no trajectory has a
    categorised sentence."""
    if len(correct) != len(categories):
        V.fail("correct", f"one flag per trajectory ({len(categories)})", str(len(correct)))
    pairs = [(sum(c == "teacher" for c in row) / n, float(right))
             for row, right in zip(categories, correct, strict=True) if (n := sum(c is not None for c in row))]
    if len(pairs) < 2:
        return None
    x, y = torch.tensor(pairs, dtype=torch.float64).T
    if float(x.std()) == 0 or float(y.std()) == 0:
        return None
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])


def mean_probabilities(categories: Sequence[Sequence[str | None]], probabilities: dict[str, Sequence[torch.Tensor]]
                       ) -> dict[str, dict[str, float | None]]:
    """Per category, the mean sentence probability under each model (``probabilities``: model role, e.g.
    ``"teacher"``, -> one (sentences,) tensor per trajectory), over the sentences of that category; None where the
    category has none."""
    out: dict[str, dict[str, float | None]] = {}
    for k in CATEGORIES:
        out[k] = {}
        for role, per_trajectory in probabilities.items():
            if len(per_trajectory) != len(categories):
                V.fail(f"probabilities[{role!r}]", f"one tensor per trajectory ({len(categories)})",
                       str(len(per_trajectory)))
            values = [float(p[i]) for row, p in zip(categories, per_trajectory, strict=True)
                      for i, c in enumerate(row) if c == k]
            out[k][role] = sum(values) / len(values) if values else None
    return out


def sensitivity(probabilities: dict[str, Sequence[torch.Tensor]], alphas: Sequence[float],
                betas: Sequence[float]) -> dict:
    """How the category shares move with the thresholds: for every (alpha, beta) on the grid, the pooled share of
    each category (the sensitivity chart's data).

    Parameters
    ----------
    probabilities : ``{"teacher", "student", "distilled"}`` -> one (sentences,) tensor per trajectory
    alphas, betas : the grid, each value in [0, 1]

    Returns
    -------
    dict: ``alphas``, ``betas``, and ``shares``: category -> (alphas x betas) nested lists (None without sentences)
    """
    missing = sorted({"teacher", "student", "distilled"} - set(probabilities))
    if missing:
        V.fail("probabilities", "the keys 'teacher', 'student' and 'distilled'", f"no {missing}")
    t, s, d = (torch.cat([p.double() for p in probabilities[k]]) if len(probabilities[k]) else
               torch.zeros(0, dtype=torch.float64) for k in ("teacher", "student", "distilled"))
    shares = {k: [[None] * len(betas) for _ in alphas] for k in CATEGORIES}
    for i, alpha in enumerate(alphas):
        for j, beta in enumerate(betas):
            found = [c for c in categorize(t, s, d, alpha, beta) if c is not None]
            for k in CATEGORIES:
                shares[k][i][j] = found.count(k) / len(found) if found else None
    return {"alphas": [float(a) for a in alphas], "betas": [float(b) for b in betas], "shares": shares}


def share_difference(categories: Sequence[Sequence[str | None]], first: Sequence[Sequence[bool]],
                     second: Sequence[Sequence[bool]], category: str = "teacher", n_resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """The share of ``category`` among the sentences ``first`` picks minus its share among those ``second`` picks
    (each: per trajectory, per sentence, a flag), pooled over trajectories, with a percentile-bootstrap interval
    that resamples whole trajectories: e.g. the first third against the last third of every trajectory, or the
    sentences of right answers against those of wrong ones.

    Returns
    -------
    dict: ``difference``, ``low``, ``high`` (None where a side has no categorised sentence, or no interval from
    fewer than two trajectories), and ``first`` / ``second``: the two pooled shares
    """
    from kdlens.measures.resampling import bootstrap_indices, percentile_interval

    V.check_choice(category, "category", CATEGORIES)
    if not (len(categories) == len(first) == len(second)):
        V.fail("first` and `second", f"one list of flags per trajectory ({len(categories)})",
               f"{len(first)} and {len(second)}")
    counts = torch.tensor([[sum(c == category and a for c, a in zip(row, pa, strict=True)),
                            sum(c is not None and a for c, a in zip(row, pa, strict=True)),
                            sum(c == category and b for c, b in zip(row, pb, strict=True)),
                            sum(c is not None and b for c, b in zip(row, pb, strict=True))]
                           for row, pa, pb in zip(categories, first, second, strict=True)],
                          dtype=torch.float64).reshape(-1, 4)  # (trajectories, [mine, all] x [first, second])

    def difference(totals: torch.Tensor) -> torch.Tensor:  # (..., 4) -> (...,); NaN where a side is empty
        return totals[..., 0] / totals[..., 1] - totals[..., 2] / totals[..., 3]

    totals = counts.sum(0)
    out = {"first": float(totals[0] / totals[1]) if totals[1] else None,
           "second": float(totals[2] / totals[3]) if totals[3] else None,
           "difference": None, "low": None, "high": None}
    if out["first"] is None or out["second"] is None:
        return out
    out["difference"] = float(difference(totals))
    if len(categories) >= 2:
        draws = torch.cat([difference(counts[rows].sum(1))
                           for rows in bootstrap_indices(len(categories), n_resamples, seed, chunk=256)])
        draws = draws[~torch.isnan(draws)]  # a resample with one side empty says nothing of the difference
        if len(draws):
            interval = percentile_interval(out["difference"], draws, level)
            out["low"], out["high"] = interval.low, interval.high
    return out


def fits(model, prompts: Sequence[str], trajectories: Sequence[str]) -> list[bool]:
    """Whether each ``prompt + trajectory`` fits ``model``'s context (its ``max_positions``; always, without one)."""
    limit = model.max_positions
    if limit is None or not prompts:
        return [True] * len(prompts)
    ids = model.tokenizer([p + t for p, t in zip(prompts, trajectories, strict=True)],
                          add_special_tokens=True)["input_ids"]
    return [len(row) <= limit for row in ids]
