"""Every public measure rejects every bad input with the one message template, naming the argument at fault."""

import math
import re

import pytest
import torch

from kdlens import measures as M

N, C, D = 12, 3, 4
TEMPLATE = r"Expected `{name}`( and `[^`]+`)? to be .+, but got .+"


def raises(error_type, name, fragment=""):
    """pytest.raises for the kdlens template naming ``name`` (a regex), with ``fragment`` anywhere in the message."""
    return pytest.raises(error_type, match=TEMPLATE.format(name=name), check=lambda e: fragment in str(e))


def good_logits(seed=0):
    return torch.randn(N, C, generator=torch.Generator().manual_seed(seed))


def good_probs(seed=0):
    return good_logits(seed).softmax(-1)


def good_labels():
    return torch.arange(N) % C


def good_features(width=D, seed=0):
    return torch.randn(N, width, generator=torch.Generator().manual_seed(seed))


def streaming(metric_cls, **kwargs):
    def run(*args):
        metric_cls(**kwargs).update(*args)
    return run


def dict_pair(fn):
    def run(x, y, **kwargs):
        return fn({"x": x}, {"y": y}, **kwargs)
    return run


def matrix_metric(x, y, debiased=False):
    metric = M.CKAMatrix(["x"], ["y"], debiased=debiased)
    metric.update({"x": x}, {"y": y})
    metric.compute()  # a batch may be small; the total must be large enough for the estimator


def linear_metric(x, y, debiased=False):
    metric = M.LinearCKA(debiased=debiased)
    metric.update(x, y)
    metric.compute()


# name -> (callable, argument names, good arguments)
LOGIT_PAIR = {
    "agreement": M.agreement, "kl_divergence": M.kl_divergence, "js_divergence": M.js_divergence,
    "total_variation": M.total_variation, "Agreement.update": streaming(M.Agreement),
}
PROBS_LABELS = {
    "expected_calibration_error": M.expected_calibration_error, "reliability_curve": M.reliability_curve,
    "classwise_expected_calibration_error": M.classwise_expected_calibration_error, "brier_score": M.brier_score,
    "negative_log_likelihood": M.negative_log_likelihood,
    "bootstrap_ece": lambda p, y, **kw: M.bootstrap_ece(p, y, n_resamples=5, **kw),
    "CalibrationError.update": streaming(M.CalibrationError),
    "bootstrap_paired_difference": lambda p, y: M.bootstrap_paired_difference(p, good_probs(1), y, n_resamples=5),
}
FEATURE_PAIR = {
    "linear_cka": M.linear_cka, "rbf_cka": M.rbf_cka,
    "cka_permutation_test": lambda x, y, **kw: M.cka_permutation_test(x, y, n_permutations=3, **kw),
    "cka_bootstrap_interval": lambda x, y, **kw: M.cka_bootstrap_interval(x, y, n_resamples=3, **kw),
    "LinearCKA.update": linear_metric,
    "MinibatchCKA.update": lambda x, y, debiased=True: M.MinibatchCKA().update(x, y),
    "cka_matrix": dict_pair(M.cka_matrix), "CKAMatrix.update": matrix_metric,
}


def with_value(t, value):
    t = t.clone()
    t[0, 0] = value
    return t


BAD_LOGITS = {  # case -> (bad teacher logits, message fragment)
    "nan": (with_value(good_logits(), math.nan), "finite"),
    "inf": (with_value(good_logits(), math.inf), "finite"),
    "1-D": (good_logits()[:, 0], "2-D"),
    "fewer rows": (good_logits()[:-1], "the same shape"),
}


@pytest.mark.parametrize("case", list(BAD_LOGITS))
@pytest.mark.parametrize("name", list(LOGIT_PAIR))
def test_bad_logits(name, case):
    bad, fragment = BAD_LOGITS[case]
    with pytest.raises(ValueError, match=TEMPLATE.format(name="teacher_logits.*") + ".*"):
        LOGIT_PAIR[name](bad, good_logits(1))
    with pytest.raises(ValueError, match=fragment):
        LOGIT_PAIR[name](bad, good_logits(1))
    if case in ("nan", "inf"):  # the student side is checked too, and named
        with pytest.raises(ValueError, match=TEMPLATE.format(name="student_logits")):
            LOGIT_PAIR[name](good_logits(), bad)


@pytest.mark.parametrize("bad", [[[1.0, 2.0]], torch.arange(6).view(3, 2)], ids=["list", "int-dtype"])
@pytest.mark.parametrize("name", list(LOGIT_PAIR))
def test_logits_of_wrong_type(name, bad):
    with pytest.raises(TypeError, match=TEMPLATE.format(name="teacher_logits")):
        LOGIT_PAIR[name](bad, good_logits())


def unnormalised():
    p = good_probs()
    p[2] *= 0.5
    return p


BAD_PROBS = {
    "nan": (with_value(good_probs(), math.nan), "finite"),
    "inf": (with_value(good_probs(), math.inf), "finite"),
    "logits": (good_logits(), r"probabilities in \[0, 1\]"),
    "rows not summing to 1": (unnormalised(), "rows that sum to 1"),
    "1-D": (good_probs()[:, 0], "2-D"),
    "3-D": (good_probs()[None], "2-D"),
}
BAD_LABELS = {
    "label == n_classes": (torch.full((N,), C), r"class indices in \[0, 2\]", ValueError),
    "negative label": (torch.full((N,), -1), r"class indices in \[0, 2\]", ValueError),
    "fewer labels": (good_labels()[:-1], "one label per example", ValueError),
    "2-D labels": (good_labels()[:, None], "1-D", ValueError),
    "float labels": (good_labels().float(), "integer tensor of class indices", TypeError),
}


@pytest.mark.parametrize("case", list(BAD_PROBS))
@pytest.mark.parametrize("name", list(PROBS_LABELS))
def test_bad_probabilities(name, case):
    bad, fragment = BAD_PROBS[case]
    param = "teacher_probs" if name == "bootstrap_paired_difference" else "probs"
    with pytest.raises(ValueError, match=TEMPLATE.format(name=param)) as error:
        PROBS_LABELS[name](bad, good_labels())
    assert fragment.replace("\\", "") in str(error.value)


@pytest.mark.parametrize("case", list(BAD_LABELS))
@pytest.mark.parametrize("name", [*PROBS_LABELS, "fit_temperature"])
def test_bad_labels(name, case):
    bad, fragment, error_type = BAD_LABELS[case]
    fn = (lambda z, y: M.fit_temperature(z, y)) if name == "fit_temperature" else PROBS_LABELS[name]
    good = good_logits() if name == "fit_temperature" else good_probs()
    with raises(error_type, "labels", fragment.replace("\\", "")):
        fn(good, bad)


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True, "15"])
@pytest.mark.parametrize("name", ["expected_calibration_error", "reliability_curve", "bootstrap_ece",
                                  "classwise_expected_calibration_error", "CalibrationError"])
def test_bad_n_bins(name, n_bins):
    fn = (lambda p, y, n_bins: M.CalibrationError(n_bins=n_bins)) if name == "CalibrationError" else PROBS_LABELS[name]
    with raises(ValueError, "n_bins", "positive integer"):
        fn(good_probs(), good_labels(), n_bins=n_bins)


def test_bad_choices_and_scalars():
    cases = [
        (lambda: M.expected_calibration_error(good_probs(), good_labels(), binning="quantile"), "binning"),
        (lambda: M.expected_calibration_error(good_probs(), good_labels(), norm="l3"), "norm"),
        (lambda: M.kl_divergence(good_logits(), good_logits(), reduction="sum"), "reduction"),
        (lambda: M.kl_divergence(good_logits(), good_logits(), temperature=0.0), "temperature"),
        (lambda: M.kl_divergence(good_logits(), good_logits(), temperature=-1.0), "temperature"),
        (lambda: M.rbf_cka(good_features(), good_features(), sigma=0.0), "sigma"),
        (lambda: M.linear_cka(good_features()[:, None], good_features()[:, None], pool="max"), "pool"),
        (lambda: M.bootstrap_ece(good_probs(), good_labels(), level=1.5), "level"),
        (lambda: M.bootstrap_ece(good_probs(), good_labels(), n_resamples=0), "n_resamples"),
        (lambda: M.cka_permutation_test(good_features(), good_features(), n_permutations=0), "n_permutations"),
        (lambda: M.bootstrap_paired_difference(good_probs(), good_probs(), good_labels(), measure="auc"), "measure"),
        (lambda: M.fit_temperature(good_logits(), good_labels(), bounds=(5.0, 1.0)), "bounds"),
        (lambda: M.cka_matrix({"a": good_features()}, {"b": good_features()}, kernel="poly"), "kernel"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=TEMPLATE.format(name=name)):
            call()


def bad_features():
    x = good_features()
    return {
        "nan": (with_value(x, math.nan), "finite"),
        "inf": (with_value(x, -math.inf), "finite"),
        "fewer rows": (x[:-1], "aligned"),
        "1-D": (x[:, 0], "2-D"),
        "4-D": (x.view(N, 1, 2, 2), "2-D"),
        "tokens without pool": (x.view(N, 2, 2), 'pool="mean"'),
        "one example": (x[:1], "at least"),
    }


@pytest.mark.parametrize("case", list(bad_features()))
@pytest.mark.parametrize("name", list(FEATURE_PAIR))
def test_bad_features(name, case):
    bad, fragment = bad_features()[case]
    y = good_features(3, seed=1)
    if case == "one example":
        y = y[:1]
    with raises(ValueError, r"(x|feats_a\['x'\]|feats_a)", fragment):
        FEATURE_PAIR[name](bad, y)


@pytest.mark.parametrize("name", [n for n in FEATURE_PAIR if n != "MinibatchCKA.update"])
def test_debiased_needs_four_examples(name):
    with raises(ValueError, r"[^`]+", "at least 4 examples"):
        FEATURE_PAIR[name](good_features()[:3], good_features(3)[:3], debiased=True)


def test_features_of_wrong_type():
    with pytest.raises(TypeError, match=TEMPLATE.format(name="x")):
        M.linear_cka([[1.0, 2.0]] * 5, good_features()[:5])
    with pytest.raises(TypeError, match=TEMPLATE.format(name="feats_a")):
        M.cka_matrix([good_features()], {"b": good_features()})


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_compute_before_update_is_an_error():
    for metric in (M.Agreement(), M.CalibrationError(), M.LinearCKA(), M.MinibatchCKA()):
        with pytest.raises(ValueError, match="updated with at least one batch"):
            metric.compute()


# -- attribution maps and evidence masks -------------------------------------------------------------------------------

H = W = 4


def good_maps(seed=0):
    return torch.rand(N, H, W, generator=torch.Generator().manual_seed(seed))


def good_masks():
    masks = torch.zeros(N, H, W, dtype=torch.bool)
    masks[:, 1:3, 1:3] = True
    return masks


MAP_PAIR = {
    "align_maps": M.align_maps, "map_spearman": M.map_spearman, "map_topk_iou": M.map_topk_iou,
    "map_cosine": M.map_cosine,
}
MAPS_MASKS = {"evidence_mass": M.evidence_mass, "pointing_game": M.pointing_game}
ONE_MAPS = {"normalize_maps": M.normalize_maps, **{name: (lambda m, fn=fn: fn(m, good_masks()))
                                                   for name, fn in MAPS_MASKS.items()}}
BAD_MAPS = {  # case -> (bad maps, message fragment)
    "nan": (with_value(good_maps(), math.nan), "finite"),
    "inf": (with_value(good_maps(), math.inf), "finite"),
    "channel axis": (good_maps()[:, None], "squeeze(1)"),
    "flattened": (good_maps().flatten(1), "view(n, h, w)"),
    "empty": (good_maps()[:, :0], "non-empty"),
}


@pytest.mark.parametrize("case", list(BAD_MAPS))
@pytest.mark.parametrize("name", list(MAP_PAIR))
def test_bad_map_pairs(name, case):
    bad, fragment = BAD_MAPS[case]
    with raises(ValueError, "maps_a", fragment):
        MAP_PAIR[name](bad, good_maps(1))
    with raises(ValueError, "maps_b", fragment):
        MAP_PAIR[name](good_maps(1), bad)


@pytest.mark.parametrize("name", list(MAP_PAIR))
def test_map_pairs_of_different_length_or_type(name):
    with raises(ValueError, "maps_a", "aligned"):
        MAP_PAIR[name](good_maps()[:-1], good_maps(1))
    with raises(TypeError, "maps_a", "floating-point"):
        MAP_PAIR[name](good_maps().long(), good_maps(1))
    with raises(TypeError, "maps_b", "numpy.ndarray"):
        MAP_PAIR[name](good_maps(), good_maps(1).tolist())


@pytest.mark.parametrize("case", list(BAD_MAPS))
@pytest.mark.parametrize("name", list(ONE_MAPS))
def test_bad_maps(name, case):
    bad, fragment = BAD_MAPS[case]
    with raises(ValueError, "maps", fragment):
        ONE_MAPS[name](bad)


@pytest.mark.parametrize("bad", [good_maps().tolist(), good_maps().bool()], ids=["list", "bool-dtype"])
@pytest.mark.parametrize("name", list(ONE_MAPS))
def test_maps_of_wrong_type(name, bad):
    with raises(TypeError, "maps"):
        ONE_MAPS[name](bad)


BAD_MASKS = {  # case -> (bad masks, message fragment, error)
    "soft mask": (good_masks().float() * 0.7, "masks > 0.5", ValueError),
    "nan": (with_value(good_masks().float(), math.nan), "0/1 values", ValueError),
    "fewer masks": (good_masks()[:-1], "one mask per map", ValueError),
    "channel axis": (good_masks()[:, None], "squeeze(1)", ValueError),
    "2-D": (good_masks()[0], "masks[None]", ValueError),
    "list": (good_masks().tolist(), "numpy.ndarray", TypeError),
}


@pytest.mark.parametrize(("name", "case"), [(name, case) for name in [*MAPS_MASKS, "mask_fraction"]
                                             for case in BAD_MASKS if (name, case) != ("mask_fraction", "fewer masks")])
def test_bad_masks(name, case):
    bad, fragment, error_type = BAD_MASKS[case]
    fn = M.mask_fraction if name == "mask_fraction" else (lambda masks, fn=MAPS_MASKS[name]: fn(good_maps(), masks))
    with raises(error_type, "masks", fragment):
        fn(bad)


VALUES = {
    "bootstrap_mean_interval": lambda v, **kw: M.bootstrap_mean_interval(v, n_resamples=5, **kw),
    "bootstrap_mean_difference": lambda v, **kw: M.bootstrap_mean_difference(v, torch.rand(N), n_resamples=5, **kw),
}
BAD_VALUES = {  # case -> (bad values, message fragment, error)
    "inf": (with_value(torch.rand(N, 1), math.inf)[:, 0], "finite or NaN", ValueError),
    "column": (torch.rand(N, 1), "view(-1)", ValueError),
    "all NaN": (torch.full((N,), math.nan), "at least 2", ValueError),
    "int dtype": (torch.ones(N, dtype=torch.long), "floating-point", TypeError),
    "list": ([0.5] * N, "numpy.ndarray", TypeError),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
@pytest.mark.parametrize("name", list(VALUES))
def test_bad_values(name, case):
    bad, fragment, error_type = BAD_VALUES[case]
    param = "values_a" if name == "bootstrap_mean_difference" else "values"
    with raises(error_type, param, fragment):
        VALUES[name](bad)


def test_bad_map_choices_and_scalars():
    maps, masks = good_maps(), good_masks()
    cases = [
        (lambda: M.map_topk_iou(maps, maps, k=0.0), "k"),
        (lambda: M.map_topk_iou(maps, maps, k=1.5), "k"),
        (lambda: M.map_topk_iou(maps, maps, k=True), "k"),
        (lambda: M.normalize_maps(maps, method="max"), "method"),
        (lambda: M.align_maps(maps, maps, mode="linear"), "mode"),
        (lambda: M.align_maps(maps, maps, size=(0, 3)), "size"),
        (lambda: M.align_maps(maps, maps, size=224), "size"),
        (lambda: M.pointing_game(maps, masks, tolerance=-1), "tolerance"),
        (lambda: M.pointing_game(maps, masks, tolerance=1.5), "tolerance"),
        (lambda: M.bootstrap_mean_interval(torch.rand(N), level=1.5), "level"),
        (lambda: M.bootstrap_mean_interval(torch.rand(N), n_resamples=0), "n_resamples"),
        (lambda: M.bootstrap_mean_difference(torch.rand(N), torch.rand(N), n_resamples=0), "n_resamples"),
        (lambda: M.bootstrap_mean_difference(torch.rand(N), torch.rand(N - 1)), "values_a"),
        (lambda: M.mask_fraction(masks, reduction="sum"), "reduction"),
    ]
    cases += [(lambda fn=fn: fn(maps, maps, reduction="sum"), "reduction") for fn in MAP_PAIR.values()
              if fn is not M.align_maps]
    cases += [(lambda fn=fn: fn(maps, masks, reduction="sum"), "reduction") for fn in MAPS_MASKS.values()]
    for call, name in cases:
        with pytest.raises(ValueError, match=TEMPLATE.format(name=name)):
            call()


# -- reasoning traces and text overlap ---------------------------------------------------------------------------------

FLAGS = [True, False, True, True]
BAD_FLAGS = {  # case -> (bad flags, message fragment, error)
    "empty": ([], "non-empty", ValueError),
    "scores": ([0.2, 0.9, 0.4, 0.7], "> 0.5", TypeError),
    "integers beyond 0/1": ([0, 2, 1, 1], "0/1 integers", ValueError),
    "strings": (["yes", "no", "yes", "yes"], "bools", TypeError),
    "None": ([None, True, True, True], "bools", TypeError),
    "2-D": (torch.ones(4, 1, dtype=torch.bool), "1-D", ValueError),
    "a str": ("TFTT", "list", TypeError),
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_bad_trace_answer_flags(case):
    bad, fragment, error_type = BAD_FLAGS[case]
    with raises(error_type, "trace_correct", fragment):
        M.trace_answer_table(bad, FLAGS)
    if case != "empty":  # the answer side is checked too, and named
        with raises(error_type, "answer_correct", fragment):
            M.trace_answer_table(FLAGS, bad)


def test_trace_answer_flags_of_different_length():
    with raises(ValueError, "trace_correct", "aligned"):
        M.trace_answer_table(FLAGS, FLAGS[:-1])


BAD_COUNTS = {  # case -> (bad counts, message fragment, error)
    "negative count": ([[3, -1], [2, 4]], "nonnegative", ValueError),
    "all zero": ([[0, 0], [0, 0]], "at least one example", ValueError),
    "2x3": ([[1, 2, 3], [4, 5, 6]], "2x2", ValueError),
    "flat": ([1, 2, 3, 4], "2x2", ValueError),
    "ragged": ([[1], [2, 3]], "2x2", ValueError),
    "float counts": ([[1.5, 2.0], [3.0, 4.0]], "integer counts", TypeError),
    "bool counts": (torch.ones(2, 2, dtype=torch.bool), "integer counts", TypeError),
    "a str": ("1 2 3 4", "TraceAnswerTable", TypeError),
}


@pytest.mark.parametrize("case", list(BAD_COUNTS))
def test_bad_independence_counts(case):
    bad, fragment, error_type = BAD_COUNTS[case]
    with raises(error_type, "table_or_counts", fragment):
        M.independence_test(bad)


STEPS = [[True, False], [True]]
BAD_STEPS = {  # case -> (bad steps, the argument named, message fragment, error)
    "empty": ([], "teacher_steps", "non-empty", ValueError),
    "fewer questions": (STEPS[:1], "teacher_steps", "aligned", ValueError),
    "fewer steps": ([[True], [True]], re.escape("teacher_steps[0]"), "one entry per gold step", ValueError),
    "no gold steps": ([[True, False], []], re.escape("teacher_steps[1]"), "at least one gold step", ValueError),
    "a str per question": (["TF", "T"], re.escape("teacher_steps[0]"), "list of per-step entries", TypeError),
    "not a list": (3, "teacher_steps", "list", TypeError),
    "1-D tensor": (torch.ones(2, dtype=torch.bool), "teacher_steps", "2-D", ValueError),
}


@pytest.mark.parametrize("case", list(BAD_STEPS))
def test_bad_step_lists(case):
    bad, name, fragment, error_type = BAD_STEPS[case]
    student = [[True, True], []] if case == "no gold steps" else STEPS
    with raises(error_type, name, fragment):
        M.step_agreement(bad, student)


HYPS, REFS = ["a b c", "d e"], ["a b c", ["d e", "d f"]]
BAD_TEXTS = {  # case -> (call, the argument named, message fragment, error)
    "fewer references": (lambda: M.bleu(HYPS, REFS[:1]), "hypotheses", "aligned", ValueError),
    "no hypotheses": (lambda: M.bleu([], []), "hypotheses", "non-empty", ValueError),
    "a str of hypotheses": (lambda: M.bleu("a b c", ["a b c"]), "hypotheses", "sentence_bleu", TypeError),
    "token lists": (lambda: M.bleu([["a", "b"]], ["a b"]), re.escape("hypotheses[0]"), "str", TypeError),
    "no references for one": (lambda: M.bleu(HYPS, ["a b c", []]), re.escape("references[1]"), "at least one",
                               ValueError),
    "a non-str reference": (lambda: M.bleu(HYPS, ["a b c", [None]]), re.escape("references[1][0]"), "str",
                            TypeError),
    "a str of references": (lambda: M.bleu(["a b"], "a b"), "references", "list", TypeError),
    "sentence: token list": (lambda: M.sentence_bleu(["a", "b"], "a b"), "hypothesis", "str", TypeError),
    "sentence: no references": (lambda: M.sentence_bleu("a b", []), "references", "non-empty", ValueError),
    "sentence: int reference": (lambda: M.sentence_bleu("a b", 3), "references", "list of str", TypeError),
    "rouge: hypothesis": (lambda: M.rouge_l(["a"], "a"), "hypothesis", "str", TypeError),
    "rouge: reference": (lambda: M.rouge_l("a", None), "reference", "str", TypeError),
}


@pytest.mark.parametrize("case", list(BAD_TEXTS))
def test_bad_texts(case):
    call, name, fragment, error_type = BAD_TEXTS[case]
    with raises(error_type, name, fragment):
        call()


def test_bad_trace_choices_and_scalars():
    value_cases = [
        (lambda: M.step_agreement(STEPS, STEPS, reduction="sum"), "reduction"),
        (lambda: M.step_agreement(STEPS, STEPS, kind="exact"), "kind"),
        (lambda: M.bleu(HYPS, REFS, max_order=0), "max_order"),
        (lambda: M.bleu(HYPS, REFS, max_order=2.0), "max_order"),
        (lambda: M.bleu(HYPS, REFS, max_order=True), "max_order"),
        (lambda: M.bleu(HYPS, REFS, smooth="exp"), "smooth"),
        (lambda: M.sentence_bleu("a b", "a b", smooth="add-k"), "smooth"),
    ]
    for call, name in value_cases:
        with pytest.raises(ValueError, match=TEMPLATE.format(name=name)):
            call()
    type_cases = [
        (lambda: M.independence_test([[1, 2], [3, 4]], correction="yes"), "correction"),
        (lambda: M.step_agreement([[1, 2]], [[1, 2]], kind="correctness"), "teacher_steps"),
    ]
    for call, name in type_cases:
        with pytest.raises(TypeError, match=TEMPLATE.format(name=name)):
            call()
