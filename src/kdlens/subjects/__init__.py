"""Adapters: what kdlens needs from a model, whatever framework trained it."""

from kdlens.subjects.checkpoint import build_architecture, load_classifier, load_weights, save_classifier
from kdlens.subjects.classifier import Classifier
from kdlens.subjects.lm import (
    ContinuationScore,
    HiddenStates,
    LanguageModel,
    TokenLogits,
    check_same_vocabulary,
    pool_by_spans,
    word_spans,
)
from kdlens.subjects.word_tokenizer import SPECIAL_TOKEN_IDS, build_word_tokenizer

__all__ = ["Classifier", "build_architecture", "load_classifier", "load_weights", "save_classifier",
           "LanguageModel", "ContinuationScore", "HiddenStates", "TokenLogits", "check_same_vocabulary",
           "pool_by_spans", "word_spans", "build_word_tokenizer", "SPECIAL_TOKEN_IDS"]
