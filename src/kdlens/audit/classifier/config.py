"""What ``kdlens audit CONFIG`` reads for classifiers: the models, the data, the probes' settings and the selection
rule.

Every key has a default but ``run_dir``, the teacher and the students (which Python callers may pass as modules
instead). The whole file is validated before any model is built; a typo names the key it was probably meant to be.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from kdlens.audit.config import AuditSettings
from kdlens.config import StrictModel, did_you_mean, with_default_task
from kdlens.subjects.sources import ModelSource
from kdlens.tasks.shapes import ShapesConfig


class ShapesAuditData(StrictModel):
    """The lab's shapes task: ``n`` images of each split, with evidence masks, difficulty and counterfactual cues.

    The first split is the one attribution, representations and robustness run on; ``test_shifted`` (the cue points
    to a wrong class) gives ``accuracy_shifted``.
    """

    task: Literal["shapes"] = "shapes"
    shapes: ShapesConfig = Field(default_factory=ShapesConfig)
    n: int = Field(1000, ge=1, le=100_000, description="images per split (drawn, so bounded: 100,000 is 1.2 GB)")
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
    n: int | None = Field(None, ge=1, le=100_000, description="at most n examples (all when fewer)")

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


ClassifierData = Annotated[ShapesAuditData | TensorAuditData | ImageFolderAuditData, Field(discriminator="task")]


class ModelLayers(StrictModel):
    """Which layers of one model the probes read (``named_modules()`` names); left out, kdlens picks them: the last
    layer with a spatial (n, C, H, W) output for attribution, the top-level blocks for representations."""

    attribution: str | None = None
    representations: list[str] | None = None


class OutputsProbe(StrictModel):
    n_bins: int = Field(15, ge=1, le=1000, description="equal-width bins of ECE, MCE and the reliability curves")


class RepresentationsProbe(StrictModel):
    enabled: bool = True
    n: int | None = Field(None, ge=2, le=100_000, description="at most n examples of the primary split (default: all)")


class AttributionProbe(StrictModel):
    """Grad-CAM maps of every model for the teacher's predicted class, compared per example.

    The verdict thresholds come from a ``teacher_reseeded`` baseline when there is one, else from
    ``agreement_threshold`` / ``evidence_threshold`` if given; with neither, verdicts are left out (null)."""

    enabled: bool = True
    n: int | None = Field(None, ge=1, le=100_000, description="at most n examples (all when fewer)")
    top_k: float = Field(0.2, gt=0, le=1)
    quantile: float = Field(0.1, gt=0, lt=1)
    agreement_threshold: float | None = Field(None, ge=-1, le=1)
    evidence_threshold: float | None = Field(None, ge=0, le=1)


class RobustnessProbe(StrictModel):
    """PGD against each model; ``epsilon`` is the headline budget, ``epsilons`` the curve (L-inf, input units)."""

    enabled: bool = True
    n: int | None = Field(500, ge=1, le=100_000, description="at most n examples (all when fewer)")
    epsilon: float = Field(4 / 255, gt=0)
    epsilons: list[float] = Field(default_factory=lambda: [1 / 255, 2 / 255, 4 / 255, 8 / 255])
    steps: int = Field(10, ge=1, le=1000)
    bounds: tuple[float, float] = Field((0.0, 1.0), description="the inputs' valid range, which attacks clip to "
                                        "(images in [0, 1]: the default); every epsilon is at most its width")

    @field_validator("epsilons")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(v <= 0 for v in values):
            raise ValueError(f"every epsilon must be > 0, got {values}")
        return sorted(set(values))

    @model_validator(mode="after")
    def _within_bounds(self) -> RobustnessProbe:
        low, high = self.bounds
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"bounds must be finite with low < high, got {list(self.bounds)}")
        too_big = [e for e in [self.epsilon, *self.epsilons] if e > high - low]
        if too_big:
            raise ValueError(f"epsilon {too_big[0]:g} exceeds the inputs' whole range ({high - low:g}, bounds "
                             f"{low:g} to {high:g}): such a budget reaches every valid input. For images in [0, 1], "
                             "2/255 to 8/255 are the usual budgets")
        return self


class Probes(StrictModel):
    outputs: OutputsProbe = Field(default_factory=OutputsProbe)
    representations: RepresentationsProbe = Field(default_factory=RepresentationsProbe)
    attribution: AttributionProbe = Field(default_factory=AttributionProbe)
    robustness: RobustnessProbe = Field(default_factory=RobustnessProbe)


class AuditConfig(AuditSettings):
    """One audit: a teacher against students (and baselines) on a task, written to ``run_dir``."""

    data: ClassifierData = Field(default_factory=ShapesAuditData)
    baselines: dict[str, ModelSource] = Field(
        default_factory=dict, description="reference models, e.g. teacher_reseeded (sets the verdict thresholds)")
    layers: dict[str, ModelLayers] = Field(default_factory=dict, description="model name -> its layers")
    probes: Probes = Field(default_factory=Probes)
    batch_size: int = Field(256, ge=1, le=65_536)

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
