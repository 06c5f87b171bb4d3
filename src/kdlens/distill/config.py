"""Configs of a distillation: the strategy (weighted loss terms and their layer maps) and the training loop.

A strategy in YAML::

    name: multi_objective
    terms:
      - {loss: kd, weight: 0.9, temperature: 4.0}
      - {loss: hard_label, weight: 0.1}
      - {loss: fitnet, weight: 1.0, pairs: [{teacher: block2, student: block2}]}
      - {loss: calibration, weight: 0.5, kind: mdca}

Each term names its loss; ``pairs`` map teacher layers to student layers for the per-layer ("layered") losses,
each pair with its own weight.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from kdlens.config import StrictModel, did_you_mean


class LayerPair(StrictModel):
    """One teacher layer matched to one student layer (``named_modules()`` names)."""

    teacher: str
    student: str
    weight: float = Field(1.0, ge=0)


class _Term(StrictModel):
    weight: float = Field(1.0, ge=0)


class KDTerm(_Term):
    """Hinton KD: T^2 KL(p_teacher^T || p_student^T); the temperature is the logit smoothing."""

    loss: Literal["kd"]
    temperature: float = Field(4.0, gt=0)


class ReverseKLTerm(_Term):
    loss: Literal["reverse_kl"]
    temperature: float = Field(1.0, gt=0)


class JSDTerm(_Term):
    """Generalized Jensen-Shannon divergence (GKD), interpolating forward and reverse KL by beta."""

    loss: Literal["jsd"]
    beta: float = Field(0.5, ge=0, le=1)
    temperature: float = Field(1.0, gt=0)


class HardLabelTerm(_Term):
    loss: Literal["hard_label"]
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class CalibrationTerm(_Term):
    loss: Literal["calibration"]
    kind: Literal["mdca", "dca"] = "mdca"


class _PairTerm(_Term):
    pairs: list[LayerPair] = Field(min_length=1)


class FitNetTerm(_PairTerm):
    """FitNets hint loss; a learned projector maps each student layer to its teacher layer's width."""

    loss: Literal["fitnet"]


class AttentionTerm(_PairTerm):
    loss: Literal["attention"]
    p: float = Field(2.0, gt=0)


class RKDDistanceTerm(_PairTerm):
    loss: Literal["rkd_distance"]


class RKDAngleTerm(_PairTerm):
    loss: Literal["rkd_angle"]


class SimilarityTerm(_PairTerm):
    loss: Literal["similarity"]


class CKATerm(_PairTerm):
    loss: Literal["cka"]


class AttributionTerm(_Term):
    """Match the student's attribution map to the teacher's: input gradients, or GradCAM on one layer pair."""

    loss: Literal["attribution"]
    method: Literal["input_gradient", "gradcam"] = "input_gradient"
    pairs: list[LayerPair] = Field(default_factory=list)

    @model_validator(mode="after")
    def _gradcam_needs_a_layer(self):
        if self.method == "gradcam" and len(self.pairs) != 1:
            raise ValueError("attribution with method 'gradcam' needs exactly one layer pair "
                             "(pairs: [{teacher: <conv layer>, student: <conv layer>}])")
        return self


Term = Annotated[
    KDTerm | ReverseKLTerm | JSDTerm | HardLabelTerm | CalibrationTerm | FitNetTerm | AttentionTerm | RKDDistanceTerm
    | RKDAngleTerm | SimilarityTerm | CKATerm | AttributionTerm,
    Field(discriminator="loss"),
]
TEACHER_FREE = {"hard_label", "calibration"}


LOSSES = ("kd", "reverse_kl", "jsd", "hard_label", "calibration", "fitnet", "attention", "rkd_distance", "rkd_angle",
          "similarity", "cka", "attribution")


class StrategyConfig(StrictModel):
    """A named, weighted set of loss terms."""

    name: str = "custom"
    terms: list[Term] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _suggest_loss_names(cls, data):
        for i, term in enumerate(data.get("terms") or [] if isinstance(data, dict) else []):
            loss = term.get("loss") if isinstance(term, dict) else None
            if loss is not None and loss not in LOSSES:
                raise ValueError(f"terms[{i}]: unknown loss {loss!r}.{did_you_mean(loss, LOSSES)} "
                                 f"Losses: {', '.join(LOSSES)}.")
        return data

    @property
    def needs_teacher(self) -> bool:
        return any(term.loss not in TEACHER_FREE for term in self.terms)


class TrainConfig(StrictModel):
    """The training loop: optimiser, schedule, evaluation, checkpoints."""

    epochs: int = Field(5, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    drop_last: bool = Field(False, description="skip each epoch's last batch when it is incomplete")
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    seed: int = 0
    teacher_noise: float = Field(0.0, ge=0, description="sigma of N(0, 1) noise added to teacher logits")
    teacher_cache_mb: float = Field(1024, ge=0, description="keep the teacher's outputs for the whole training set "
                                    "in memory when they fit in this many MiB (0: run the teacher every step)")
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints; 0 = at each epoch end")
    eval_every: int = Field(1, ge=1, description="epochs between evaluations of eval_data; the last epoch is "
                            "always evaluated")
    device: str = "cpu"
    progress: bool = True


STRATEGIES: dict[str, dict] = {
    "labels_only": {"name": "labels_only", "terms": [{"loss": "hard_label"}]},
    "output_kd": {"name": "output_kd", "terms": [{"loss": "kd", "weight": 0.9, "temperature": 4.0},
                                                 {"loss": "hard_label", "weight": 0.1}]},
}
