"""Adapters: what kdlens needs from a model, whatever framework trained it."""

from kdlens.subjects.checkpoint import build_architecture, load_classifier, load_weights, save_classifier
from kdlens.subjects.classifier import Classifier

__all__ = ["Classifier", "build_architecture", "load_classifier", "load_weights", "save_classifier"]
