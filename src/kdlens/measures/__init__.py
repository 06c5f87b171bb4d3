"""Pure tensor math that every kdlens audit reports: fidelity, calibration, representational similarity and
attribution-map comparison.

Functional measures take tensors or numpy arrays and return floats (or per-example tensors with
``reduction="none"``); their streaming twins are ``torchmetrics.Metric`` subclasses sharing the same code.
"""

from kdlens.measures.attribution_maps import align_maps, map_cosine, map_spearman, map_topk_iou, normalize_maps
from kdlens.measures.calibration import (
    CalibrationError,
    ReliabilityCurve,
    brier_score,
    classwise_expected_calibration_error,
    confidence_calibration_error,
    confidence_reliability_curve,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_curve,
)
from kdlens.measures.calibration_intervals import bootstrap_ece, bootstrap_paired_difference
from kdlens.measures.cka import cka_matrix, linear_cka, rbf_cka
from kdlens.measures.cka_intervals import PermutationTest, cka_bootstrap_interval, cka_permutation_test
from kdlens.measures.cka_streaming import CKAMatrix, LinearCKA, MinibatchCKA
from kdlens.measures.evidence import (
    bootstrap_mean_difference,
    bootstrap_mean_interval,
    evidence_mass,
    mask_fraction,
    pointing_game,
)
from kdlens.measures.fidelity import Agreement, agreement, js_divergence, kl_divergence, total_variation
from kdlens.measures.latent_scaling import Exclusivity, LatentScaling, classify_exclusive, latent_betas, latent_scaling
from kdlens.measures.latent_statistics import LatentStatistics, contexts, group_shares
from kdlens.measures.merging import merge_states
from kdlens.measures.resampling import Interval
from kdlens.measures.text_overlap import bleu, rouge_l, sentence_bleu
from kdlens.measures.traces import (
    IndependenceTest,
    TraceAnswerTable,
    independence_test,
    step_agreement,
    trace_answer_table,
)

__all__ = [
    "Agreement",
    "CKAMatrix",
    "CalibrationError",
    "Exclusivity",
    "Interval",
    "LatentScaling",
    "LatentStatistics",
    "LinearCKA",
    "MinibatchCKA",
    "PermutationTest",
    "ReliabilityCurve",
    "agreement",
    "align_maps",
    "bootstrap_ece",
    "bootstrap_mean_difference",
    "bootstrap_mean_interval",
    "bootstrap_paired_difference",
    "brier_score",
    "cka_bootstrap_interval",
    "cka_matrix",
    "cka_permutation_test",
    "classify_exclusive",
    "classwise_expected_calibration_error",
    "confidence_calibration_error",
    "confidence_reliability_curve",
    "contexts",
    "evidence_mass",
    "expected_calibration_error",
    "fit_temperature",
    "group_shares",
    "js_divergence",
    "kl_divergence",
    "latent_betas",
    "latent_scaling",
    "linear_cka",
    "map_cosine",
    "map_spearman",
    "map_topk_iou",
    "mask_fraction",
    "merge_states",
    "negative_log_likelihood",
    "normalize_maps",
    "pointing_game",
    "rbf_cka",
    "reliability_curve",
    "total_variation",
    "IndependenceTest",
    "TraceAnswerTable",
    "bleu",
    "independence_test",
    "rouge_l",
    "sentence_bleu",
    "step_agreement",
    "trace_answer_table",
]
