"""How the scorecard chooses a student, the same for every audit kind: each metric's direction, the risk
thresholds, and the selection rule (weights, floors, the largest accuracy drop)."""

from __future__ import annotations

import math

from pydantic import Field, field_validator

from kdlens.config import StrictModel, did_you_mean

# How each scorecard metric is read: "higher" is better, or "lower" is better.
METRICS = {
    "accuracy": "higher", "accuracy_shifted": "higher", "agreement": "higher", "kl": "lower", "ece": "lower",
    "cka_mean_best": "higher", "attribution_spearman": "higher", "evidence_mass": "higher",
    "right_for_wrong_reasons": "lower", "cue_flip_rate": "lower", "adversarial_agreement": "higher",
    # language models that reason in steps
    "trace_accuracy": "higher", "step_agreement": "higher", "bleu": "higher",
}


class RiskThresholds(StrictModel):
    """When a verdict names a risk (each a difference or a share, in [0, 1])."""

    shifted_drop: float = Field(0.15, description="teacher's shifted accuracy minus the student's")
    wrong_reasons: float = Field(0.2, description="share of correct answers right for the wrong reasons")
    cue_flips: float = Field(0.1, description="share of answers that change when only the cue changes")
    ece_excess: float = Field(0.03, description="student's ECE minus the teacher's")
    disagreement: float = Field(0.05, description="share of examples where student and teacher disagree")
    adversarial_agreement: float = Field(0.1, description="agreement on inputs attacked against the student below "
                                         "this (most students fall far below 1 under PGD; this flags the worst)")
    step_disagreement: float = Field(0.2, description="language models: share of the teacher's right steps the "
                                     "student does not also get right (1 - step agreement)")


def _default_weights() -> dict[str, float]:
    return {"accuracy": 1.0, "accuracy_shifted": 1.0, "agreement": 0.5, "ece": 0.5, "cka_mean_best": 0.25,
            "attribution_spearman": 1.0, "right_for_wrong_reasons": 1.0, "cue_flip_rate": 0.5,
            "adversarial_agreement": 0.5, "trace_accuracy": 1.0, "step_agreement": 1.0}


class SelectionRule(StrictModel):
    """How the scorecard chooses a student.

    A student must pass every floor: ``max_accuracy_drop`` below the teacher's accuracy at most, and each entry of
    ``floors`` (a bound on a metric: a minimum for metrics where higher is better, a maximum where lower is). Among
    those that pass, the highest score wins: the weighted mean of each metric's utility in [0, 1] (the value; 1 -
    value for ece, right_for_wrong_reasons, cue_flip_rate; exp(-kl) for kl; max(value, 0) for Spearman). A metric
    that no student has (its probe did not run, or it belongs to the other kind of model: classifiers have no
    trace_accuracy, language models no attribution_spearman) drops out of the mean.
    """

    weights: dict[str, float] = Field(default_factory=_default_weights)
    floors: dict[str, float] = Field(default_factory=dict)
    max_accuracy_drop: float | None = Field(0.05, ge=0)
    teacher_floor: float | None = Field(None, ge=0, le=1, description="the teacher's accuracy below which it is no "
                                        "reference and no student is recommended against it (default: "
                                        ":func:`competence_floor`)")
    accuracy_floor: float | None = Field(None, ge=0, le=1, description="the accuracy below which no student is "
                                         "recommended or chosen (default: the teacher floor)")
    risks: RiskThresholds = Field(default_factory=RiskThresholds)

    @field_validator("weights", "floors")
    @classmethod
    def _known_metrics(cls, values: dict[str, float]) -> dict[str, float]:
        for key, value in values.items():
            if not math.isfinite(value):
                raise ValueError(f"{key}: {value} is not a finite number")
            if key not in METRICS:
                raise ValueError(f"unknown metric {key!r}.{did_you_mean(key, METRICS)} Metrics: "
                                 f"{', '.join(METRICS)}.")
        return values

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, values: dict[str, float]) -> dict[str, float]:
        negative = [k for k, v in values.items() if v < 0]
        if negative:
            raise ValueError(f"weights must be >= 0 (each metric's direction is fixed), got negative {negative}")
        if values and sum(values.values()) == 0:
            raise ValueError("at least one weight must be > 0")
        return values


CHANCE_MARGIN = 0.25  # a reference must beat guessing by this much: at 4 classes, right on half the examples
FREE_FORM_FLOOR = 0.5  # free-form answers, where guessing scores near 0: a reference is right more often than not


def competence_floor(chance: float | None) -> float:
    """The default accuracy a model must reach to be a reference (a teacher) or a recommendation (a student).

    ``chance`` is what guessing scores: 1 / classes for a classifier, 1 / choices for multiple-choice questions,
    None (or 0) for free-form answers. The floor is chance + 25 points (a teacher of 4 classes right on half the
    examples, of 10 on 35%, of 2 on 75%), and 50% for free-form answers: a teacher wrong more often than right
    cannot tell a student what to learn.
    """
    if not chance:
        return FREE_FORM_FLOOR
    return min(1.0, chance + CHANCE_MARGIN)
