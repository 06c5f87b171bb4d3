"""Which of a problem's k sampled teacher responses to keep for distillation: the teacher-guided rule of Liu et al.
(2025) and the baselines it is compared with, all at the same budget (one response per problem).

Each response is summarised by :class:`ResponseScore`: its sentences classified with the teacher T and the original
student S alone (``teacher``: p_T - p_S > beta, ``student``: p_S - p_T > beta, ``common`` otherwise; a sentence with
no token of its own is not counted), its length in S's tokens and its IFD under S.

Methods (``METHODS``), each picking per problem the response with:

- ``teacher_guided``: the most teacher sentences (the paper's rule);
- ``random``: one drawn uniformly (seeded);
- ``longest``: the most tokens;
- ``highest_teacher_share``: the largest share of teacher sentences;
- ``fewest_teacher``: the fewest teacher sentences (the rule reversed);
- ``ifd``: the highest instruction-following difficulty (Li et al. 2024): S's loss on the response given the
  question over its loss on the response alone; above 1 the question does not help S.

Ties go to the response sampled first. A response without a sentence (empty, or punctuation only) is never kept; a
problem all of whose responses are such is left out of every selection alike. Where a method's key is undefined for
every response of a problem (``ifd`` when S gives no loss), the first response with a sentence is kept, so every
method keeps one response of every usable problem.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from kdlens import validation as V

METHODS = ("teacher_guided", "random", "longest", "highest_teacher_share", "fewest_teacher", "ifd")
CLASSES = ("teacher", "student", "common")


@dataclass(frozen=True)
class ResponseScore:
    """One sampled response: its sentences' classes counted, its length in S's tokens, its IFD under S (NaN where
    either loss is undefined)."""

    n_sentences: int
    teacher: int
    student: int
    common: int
    tokens: int
    ifd: float

    @property
    def teacher_share(self) -> float:
        """Teacher sentences over the classified ones (NaN without any)."""
        classified = self.teacher + self.student + self.common
        return self.teacher / classified if classified else math.nan


def classify(p_teacher: Sequence[float], p_student: Sequence[float], beta: float) -> list[str | None]:
    """Each sentence's class from its probabilities under T and S: ``teacher`` (p_T - p_S > ``beta``), ``student``
    (p_S - p_T > ``beta``), else ``common``; None where a probability is NaN.

    >>> classify([0.9, 0.2, 0.5], [0.5, 0.8, 0.55], 0.1)
    ['teacher', 'student', 'common']
    """
    out: list[str | None] = []
    for t, s in zip(p_teacher, p_student, strict=True):
        if math.isnan(t) or math.isnan(s):
            out.append(None)
        else:
            out.append("teacher" if t - s > beta else "student" if s - t > beta else "common")
    return out


def _key(method: str, score: ResponseScore, draw: float) -> float:
    """What ``method`` maximises (NaN: never chosen)."""
    return {"teacher_guided": score.teacher, "random": draw, "longest": score.tokens,
            "highest_teacher_share": score.teacher_share, "fewest_teacher": -score.teacher,
            "ifd": score.ifd}[method]


def choose(method: str, problems: Sequence[Sequence[ResponseScore]], seed: int = 0) -> list[int | None]:
    """Per problem, the index of the response ``method`` keeps (see the module docstring), or None when no response
    of the problem has a sentence.

    Parameters
    ----------
    method : one of ``METHODS``
    problems : per problem, its k responses' scores (k may differ between problems)
    seed : ``random``'s draws (the same seed, the same picks)
    """
    V.check_choice(method, "method", METHODS)
    rng = random.Random(seed)
    picked: list[int | None] = []
    for responses in problems:
        draws = [rng.random() for _ in responses]  # drawn for every method, so `random` is the same whatever else
        best, best_key = None, -math.inf
        for j, score in enumerate(responses):
            key = _key(method, score, draws[j])
            if score.n_sentences == 0 or math.isnan(key):
                continue
            if best is None or key > best_key:
                best, best_key = j, key
        if best is None and any(score.n_sentences for score in responses):  # sentences, but NaN keys throughout
            best = next(j for j, score in enumerate(responses) if score.n_sentences)
        picked.append(best)
    return picked


def usable(problems: Sequence[Sequence[ResponseScore]]) -> list[bool]:
    """Whether each problem has a response with a sentence (else it is left out of every selection)."""
    return [any(score.n_sentences for score in responses) for responses in problems]
