"""A strategy turns one batch's teacher and student outputs into a weighted sum of loss terms.

It owns the trainable pieces some losses need (FitNets projectors), so the trainer optimises them with the
student. ``setup`` probes one batch to learn layer shapes; ``loss`` is called every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kdlens.distill import losses as L
from kdlens.distill.config import StrategyConfig
from kdlens.subjects import Classifier


@dataclass
class Outputs:
    """What one model produced on a batch: logits (B, C), captured activations, and attribution maps."""

    logits: torch.Tensor
    acts: dict[str, torch.Tensor] = field(default_factory=dict)
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    def select(self, index: torch.Tensor) -> Outputs:
        """The rows ``index`` of every tensor (a batch out of a table of per-example outputs)."""
        return Outputs(self.logits[index], {k: v[index] for k, v in self.acts.items()},
                       {k: v[index] for k, v in self.maps.items()})


def _key(layer: str) -> str:
    return layer.replace(".", "__")  # ModuleDict keys cannot contain dots


class Strategy(nn.Module):
    """Runtime form of a :class:`StrategyConfig`.

    Examples
    --------
    >>> from kdlens.distill.config import STRATEGIES
    >>> from kdlens.config import validate
    >>> strategy = Strategy(validate(STRATEGIES["output_kd"], StrategyConfig))
    >>> strategy.needs_teacher, sorted(strategy.teacher_layers)
    (True, [])
    """

    def __init__(self, config: StrategyConfig) -> None:
        super().__init__()
        self.config = config
        self.projectors = nn.ModuleDict()
        self.teacher_layers: set[str] = set()
        self.student_layers: set[str] = set()
        for term in config.terms:
            for pair in getattr(term, "pairs", []):
                self.teacher_layers.add(pair.teacher)
                self.student_layers.add(pair.student)

    @property
    def needs_teacher(self) -> bool:
        return self.config.needs_teacher

    @property
    def min_batch(self) -> int:
        """The fewest examples a batch may hold: losses that compare examples need pairs or triplets."""
        needs = {"rkd_angle": 3, "rkd_distance": 2, "cka": 2}
        return max([needs.get(term.loss, 1) for term in self.config.terms])

    @property
    def attribution(self):
        """The attribution term, if any (it needs gradients through both models' inputs)."""
        return next((t for t in self.config.terms if t.loss == "attribution"), None)

    def setup(self, teacher: Classifier | None, student: Classifier, inputs: torch.Tensor) -> None:
        """Check every layer name and build projectors from the shapes one batch produces."""
        for layer in self.student_layers:
            student.resolve(layer)
        if teacher is not None:
            for layer in self.teacher_layers:
                teacher.resolve(layer)
        fitnet_pairs = [p for t in self.config.terms if t.loss == "fitnet" for p in t.pairs]
        if not fitnet_pairs or teacher is None:
            return
        was_training = student.model.training
        student.model.eval()  # a probe must not move BatchNorm statistics
        try:
            with torch.no_grad():
                with teacher.capture(self.teacher_layers) as t_acts:
                    teacher.forward(inputs)
                with student.capture(self.student_layers) as s_acts:
                    student.forward(inputs)
        finally:
            student.model.train(was_training)
        for pair in fitnet_pairs:
            s, t = s_acts[pair.student], t_acts[pair.teacher]
            kind = "conv" if s.ndim == 4 else "linear"
            width_s, width_t = (s.shape[1], t.shape[1]) if s.ndim in (2, 4) else (s.shape[-1], t.shape[-1])
            self.projectors[_key(f"{pair.student}->{pair.teacher}")] = L.FeatureProjector(
                width_s, width_t, kind=kind).to(s.device)

    def loss(self, teacher: Outputs | None, student: Outputs, labels: torch.Tensor):
        """Total loss (scalar tensor) and each term's weighted value (floats, for logging)."""
        total = student.logits.new_zeros(())
        parts: dict[str, float] = {}
        for term in self.config.terms:
            value = self._term(term, teacher, student, labels)
            total = total + term.weight * value
            parts[term.loss] = parts.get(term.loss, 0.0) + float(term.weight * value.detach())
        return total, parts

    def _term(self, term, teacher: Outputs | None, student: Outputs, labels: torch.Tensor) -> torch.Tensor:
        s_logits = student.logits
        if term.loss == "hard_label":
            return L.hard_label_loss(s_logits, labels, label_smoothing=term.label_smoothing)
        if term.loss == "calibration":
            return L.calibration_penalty(s_logits, labels, kind=term.kind)
        assert teacher is not None, "the trainer supplies teacher outputs whenever the strategy needs them"
        t_logits = teacher.logits
        if term.loss == "kd":
            return L.kd_loss(s_logits, t_logits, temperature=term.temperature)
        if term.loss == "reverse_kl":
            return L.reverse_kl_loss(s_logits, t_logits, temperature=term.temperature)
        if term.loss == "jsd":
            return L.generalized_jsd_loss(s_logits, t_logits, beta=term.beta, temperature=term.temperature)
        if term.loss == "attribution":
            return L.attribution_alignment_loss(student.maps["attribution"], teacher.maps["attribution"])
        value = s_logits.new_zeros(())
        for pair in term.pairs:
            s, t = student.acts[pair.student], teacher.acts[pair.teacher]
            if term.loss == "fitnet":
                pair_loss = L.fitnet_loss(self.projectors[_key(f"{pair.student}->{pair.teacher}")](s), t)
            elif term.loss == "attention":
                pair_loss = L.attention_transfer_loss(s, t, p=term.p)
            elif term.loss == "rkd_distance":
                pair_loss = L.rkd_distance_loss(s, t)
            elif term.loss == "rkd_angle":
                pair_loss = L.rkd_angle_loss(s, t)
            elif term.loss == "similarity":
                pair_loss = L.similarity_preserving_loss(s, t)
            else:  # "cka"
                pair_loss = L.cka_alignment_loss(s, t)
            value = value + pair.weight * pair_loss
        return value
