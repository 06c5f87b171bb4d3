"""Distillation: losses (pure functions of logits and features), strategies (weighted losses + layer maps), one
training loop (``loop.py``) behind the classifier and language-model trainers, and runs described by one YAML file.

>>> from kdlens.distill import StrategyConfig, TrainConfig, train, losses
"""

from kdlens.distill import losses
from kdlens.distill.config import STRATEGIES, LayerPair, StrategyConfig, TrainConfig
from kdlens.distill.strategy import Strategy
from kdlens.distill.trainer import TrainResult, evaluate, train

__all__ = ["STRATEGIES", "LayerPair", "Strategy", "StrategyConfig", "TrainConfig", "TrainResult", "evaluate", "losses",
           "train"]
