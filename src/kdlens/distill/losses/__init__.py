"""Distillation losses: pure functions of logits, features and attribution maps that return scalar tensors.

Logit losses take (B, C) student and teacher logits; feature losses take one layer's activations from each model
(any shape (B, ...), or (B, C, H, W) where the loss is spatial); attribution losses take (B, h, w) saliency maps.
Divergences are in nats. Every per-example loss accepts ``reduction`` ("mean" over examples, "sum", or "none" for
the (B,) per-example values) and an optional ``mask`` (B,) of bools or nonnegative weights saying which examples count
("mean" is then the weighted mean). Relational and batch-level losses (RKD, similarity, CKA, calibration) compare the
examples with each other, so they return one value for the batch and take neither.

Validation is cheap because these run every training step: shape and argument checks always, and one
``isfinite().all()`` on logits. Student tensors are never detached here; gradients flow to whatever requires them.

Examples
--------
>>> import torch
>>> teacher = torch.tensor([[2.0, 0.0, -1.0]])
>>> float(kd_loss(teacher, teacher))
0.0
>>> round(float(kd_loss(torch.zeros(1, 3), teacher, temperature=1.0)), 4)
0.5743
"""

from kdlens.distill.losses.attribution import attribution_alignment_loss, gradcam_map, input_gradient_map
from kdlens.distill.losses.features import (
    FeatureProjector,
    attention_transfer_loss,
    cka_alignment_loss,
    fitnet_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    similarity_preserving_loss,
)
from kdlens.distill.losses.logits import (
    calibration_penalty,
    generalized_jsd_loss,
    hard_label_loss,
    kd_loss,
    reverse_kl_loss,
)

__all__ = [
    "FeatureProjector",
    "attention_transfer_loss",
    "attribution_alignment_loss",
    "calibration_penalty",
    "cka_alignment_loss",
    "fitnet_loss",
    "generalized_jsd_loss",
    "gradcam_map",
    "hard_label_loss",
    "input_gradient_map",
    "kd_loss",
    "reverse_kl_loss",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "similarity_preserving_loss",
]
