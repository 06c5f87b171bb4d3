"""Your own architecture: any nn.Module whose forward returns (batch, n_classes) logits.

kdlens builds it from the config's ``architecture: models:build_classifier`` (a factory function or a class)
with ``kwargs``, then loads ``weights`` (a safetensors state dict) strictly.
"""

from torch import nn


def build_classifier(n_classes: int = 4, width: int = 16) -> nn.Module:
    """A plain CNN: three conv stages (``features.0``, ``features.1``, ``features.2``), pooling, a linear head."""

    def stage(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

    return nn.Sequential(
        nn.Sequential(stage(3, width), nn.MaxPool2d(2), stage(width, 2 * width), nn.MaxPool2d(2),
                      stage(2 * width, 4 * width)),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, n_classes))
