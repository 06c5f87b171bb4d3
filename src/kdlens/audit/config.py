"""What ``kdlens audit CONFIG`` reads: the models, the data, the probes' settings and the selection rule.

Every key has a default but ``run_dir``, the teacher and the students (which Python callers may pass as modules
instead). The whole file is validated before any model is built; a typo names the key it was probably meant to be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from kdlens.config import StrictModel, did_you_mean, with_default_task
from kdlens.distill.run import ModelSource
from kdlens.tasks.shapes import ShapesConfig

# How each scorecard metric is read: "higher" is better, or "lower" is better.
METRICS = {
    "accuracy": "higher", "accuracy_shifted": "higher", "agreement": "higher", "kl": "lower", "ece": "lower",
    "cka_mean_best": "higher", "attribution_spearman": "higher", "evidence_mass": "higher",
    "right_for_wrong_reasons": "lower", "cue_flip_rate": "lower", "adversarial_agreement": "higher",
    # language models that reason in steps
    "trace_accuracy": "higher", "step_agreement": "higher", "bleu": "higher",
}


class ShapesAuditData(StrictModel):
    """The lab's shapes task: ``n`` images of each split, with evidence masks, difficulty and counterfactual cues.

    The first split is the one attribution, representations and robustness run on; ``test_shifted`` (the cue points
    to a wrong class) gives ``accuracy_shifted``.
    """

    task: Literal["shapes"] = "shapes"
    shapes: ShapesConfig = Field(default_factory=ShapesConfig)
    n: int = Field(1000, ge=1)
    splits: list[Literal["train", "transfer", "test", "test_shifted"]] = Field(
        default_factory=lambda: ["test", "test_shifted"], min_length=1)
    counterfactual_seed: int = 1

    @property
    def shifted_split(self) -> str | None:
        return "test_shifted" if "test_shifted" in self.splits else None


class TensorAuditData(StrictModel):
    """Your data as safetensors files (``inputs``, ``labels``; optional ``masks``, ``difficulty``,
    ``counterfactuals``, ``counterfactual_targets``), one file per split; the first split is the primary one."""

    task: Literal["tensors"]
    splits: dict[str, str] = Field(min_length=1)
    shifted_split: str | None = Field(None, description="the split whose accuracy is `accuracy_shifted`")
    n: int | None = Field(None, ge=1, description="use the first n examples of each split")

    @model_validator(mode="after")
    def _shifted_is_a_split(self):
        _check_shifted(self.shifted_split, self.splits)
        return self


class ImageFolderAuditData(StrictModel):
    """Your images in torchvision's ImageFolder layout (``root/<class>/<image>``), one root per split, with
    optional evidence masks in parallel folders (same relative paths, grey levels > 127 are evidence)."""

    task: Literal["image_folder"]
    splits: dict[str, str] = Field(min_length=1)
    masks: dict[str, str] = Field(default_factory=dict, description="split -> folder of masks")
    image_size: int | None = Field(None, ge=1, description="resize every image (and mask) to this square size")
    shifted_split: str | None = None
    n: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _known_splits(self):
        _check_shifted(self.shifted_split, self.splits)
        for split in self.masks:
            if split not in self.splits:
                raise ValueError(f"masks names split {split!r}, which is not in splits "
                                 f"({', '.join(self.splits)}).{did_you_mean(split, self.splits)}")
        return self


def _check_shifted(shifted: str | None, splits: dict[str, str]) -> None:
    if shifted is not None and shifted not in splits:
        raise ValueError(f"shifted_split {shifted!r} is not one of the splits ({', '.join(splits)})."
                         f"{did_you_mean(shifted, splits)}")


AuditData = Annotated[ShapesAuditData | TensorAuditData | ImageFolderAuditData, Field(discriminator="task")]


class ModelLayers(StrictModel):
    """Which layers of one model the probes read (``named_modules()`` names); left out, kdlens picks them: the last
    layer with a spatial (n, C, H, W) output for attribution, the top-level blocks for representations."""

    attribution: str | None = None
    representations: list[str] | None = None


class OutputsProbe(StrictModel):
    n_bins: int = Field(15, ge=1, description="equal-width bins of ECE, MCE and the reliability curves")


class RepresentationsProbe(StrictModel):
    enabled: bool = True
    n: int | None = Field(None, ge=2, description="examples of the primary split (default: all)")


class AttributionProbe(StrictModel):
    """Grad-CAM maps of every model for the teacher's predicted class, compared per example.

    The verdict thresholds come from a ``teacher_reseeded`` baseline when there is one, else from
    ``agreement_threshold`` / ``evidence_threshold`` if given; with neither, verdicts are left out (null)."""

    enabled: bool = True
    n: int | None = Field(None, ge=1)
    top_k: float = Field(0.2, gt=0, le=1)
    quantile: float = Field(0.1, gt=0, lt=1)
    agreement_threshold: float | None = Field(None, ge=-1, le=1)
    evidence_threshold: float | None = Field(None, ge=0, le=1)


class RobustnessProbe(StrictModel):
    """PGD against each model; ``epsilon`` is the headline budget, ``epsilons`` the curve (L-inf, input units)."""

    enabled: bool = True
    n: int | None = Field(500, ge=1)
    epsilon: float = Field(4 / 255, gt=0)
    epsilons: list[float] = Field(default_factory=lambda: [1 / 255, 2 / 255, 4 / 255, 8 / 255])
    steps: int = Field(10, ge=1)

    @field_validator("epsilons")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(v <= 0 for v in values):
            raise ValueError(f"every epsilon must be > 0, got {values}")
        return sorted(set(values))


class Probes(StrictModel):
    outputs: OutputsProbe = Field(default_factory=OutputsProbe)
    representations: RepresentationsProbe = Field(default_factory=RepresentationsProbe)
    attribution: AttributionProbe = Field(default_factory=AttributionProbe)
    robustness: RobustnessProbe = Field(default_factory=RobustnessProbe)


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
    risks: RiskThresholds = Field(default_factory=RiskThresholds)

    @field_validator("weights", "floors")
    @classmethod
    def _known_metrics(cls, values: dict[str, float]) -> dict[str, float]:
        for key in values:
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


class AuditConfig(StrictModel):
    """One audit: a teacher against students (and baselines) on a task, written to ``run_dir``."""

    run_dir: str
    data: AuditData = Field(default_factory=ShapesAuditData)
    teacher: ModelSource | None = None
    students: dict[str, ModelSource] = Field(default_factory=dict)
    baselines: dict[str, ModelSource] = Field(
        default_factory=dict, description="reference models, e.g. teacher_reseeded (sets the verdict thresholds)")
    layers: dict[str, ModelLayers] = Field(default_factory=dict, description="model name -> its layers")
    probes: Probes = Field(default_factory=Probes)
    selection: SelectionRule = Field(default_factory=SelectionRule)
    batch_size: int = Field(256, ge=1)
    device: str = "cpu"
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _shapes_by_default(cls, data):
        return with_default_task(data, "shapes")

    @model_validator(mode="after")
    def _names(self):
        reserved = {"teacher"} & (set(self.students) | set(self.baselines))
        if reserved:
            raise ValueError("'teacher' names the teacher; give students and baselines other names")
        both = set(self.students) & set(self.baselines)
        if both:
            raise ValueError(f"{sorted(both)} named both a student and a baseline; rename one")
        return self

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir)
