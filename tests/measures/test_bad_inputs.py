"""Every public measure rejects every bad input with the one message template, naming the argument at fault."""

import math

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
