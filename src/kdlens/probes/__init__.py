"""Analyses that run models over data: attribution maps (and, in their own modules, consistency and robustness)."""

from kdlens.probes.attribution import (
    DEFAULT_TARGET,
    GradCAM,
    GradCAMPlusPlus,
    resolve_targets,
    spatial_map,
)
from kdlens.probes.gradients import EmbeddingXGradient, InputXGradient, IntegratedGradients

__all__ = [
    "DEFAULT_TARGET",
    "EmbeddingXGradient",
    "GradCAM",
    "GradCAMPlusPlus",
    "InputXGradient",
    "IntegratedGradients",
    "resolve_targets",
    "spatial_map",
]
