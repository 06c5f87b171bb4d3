"""kdlens measures against peer libraries used as independent oracles, and the conventions where they differ.

Agreement tests use seeded float64 data whose confidences stay away from bin edges, so binning conventions cannot
matter there. Documented-difference tests pin down what each peer *actually* does where kdlens differs, next to an
independent plain-numpy reference for the value kdlens claims:

* torchmetrics: bins ``[a, b)`` plus a phantom bin for a confidence of exactly 1.0; the multiclass API casts
  confidences to float32 and sums bins in float32 (the binary API keeps the input dtype).
* netcal: bins ``[a, b)`` (numpy.histogramdd); infers binary vs multi-class from the labels *present*, so a batch
  with at most two distinct labels either raises (C > 2) or measures P(class 1) instead of the top label (C = 2).
* scikit-learn: ``log_loss`` clips probabilities to ``[eps, 1 - eps]``; ``brier_score_loss`` halves the binary score.
* scipy: ``jensenshannon`` is the square root of the JS divergence; KL from probabilities overflows when a
  probability has underflowed to 0.
* ckatorch: ``method="hsic"`` ignores ``unbiased``; the ``CKA`` class keeps only the last batch of each epoch; its
  RBF bandwidth takes the median over all n^2 squared distances, zero diagonal included.
"""

import math
import warnings

import numpy as np
import pytest
import torch

from kdlens import measures as M

# --------------------------------------------------------------------------------------------------------------
# Data and plain-numpy references
# --------------------------------------------------------------------------------------------------------------


def softmax_data(n: int, n_classes: int, seed: int, scale: float = 2.0, dtype=torch.float64):
    """(n, C) softmax probabilities of scaled Gaussian logits and uniform labels, from a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, n_classes, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(0, n_classes, (n,), generator=g)
    return logits.softmax(-1).to(dtype), labels


def assert_off_edges(values, n_bins: int, margin: float = 1e-6) -> None:
    """Guard for agreement tests: no value within ``margin`` of an interior edge k / n_bins."""
    v = np.asarray(values, dtype=np.float64).ravel()
    inner = np.arange(1, n_bins) / n_bins
    assert np.abs(v[:, None] - inner[None, :]).min() > margin


def np_binned_error(conf, hit, n_bins: int, norm: str = "l1", right_closed: bool = True) -> float:
    """Binned calibration error of ``conf`` against 0/1 ``hit``, float64 numpy, equal-width bins.

    ``right_closed=True``: bins (a, b] with 0 in the first bin (kdlens; Guo et al. 2017 define I_m = ((m-1)/M, m/M]).
    ``right_closed=False``: bins [a, b) with 1 in the last bin (numpy.histogram, netcal).
    Edges are the correctly rounded k / n_bins. Empty bins are skipped.
    """
    conf = np.asarray(conf, dtype=np.float64)
    hit = np.asarray(hit, dtype=np.float64)
    inner = np.arange(1, n_bins) / n_bins
    index = np.searchsorted(inner, conf, side="left" if right_closed else "right")
    weights, gaps = [], []
    for b in range(n_bins):
        in_bin = index == b
        if in_bin.any():
            weights.append(in_bin.mean())
            gaps.append(abs(hit[in_bin].mean() - conf[in_bin].mean()))
    weights, gaps = np.array(weights), np.array(gaps)
    if norm == "l1":
        return float(np.sum(weights * gaps))
    if norm == "l2":
        return float(np.sqrt(np.sum(weights * gaps**2)))
    return float(gaps.max())


def np_top_label_ece(probs, labels, n_bins: int, norm: str = "l1", right_closed: bool = True) -> float:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    return np_binned_error(p.max(1), p.argmax(1) == y, n_bins, norm, right_closed)


def np_classwise_ece(probs, labels, n_bins: int, norm: str = "l1") -> float:
    """Kull et al. (2019): mean over all C classes of the ECE of p_k against 1[y == k]."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    return float(np.mean([np_binned_error(p[:, k], y == k, n_bins, norm) for k in range(p.shape[1])]))


# --------------------------------------------------------------------------------------------------------------
# 1-2. Top-label ECE vs torchmetrics
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_ece_matches_torchmetrics_binary_calibration_error_in_float64(norm):
    # Top-label ECE is the binary calibration error of (confidence, correct); torchmetrics' *binary* API keeps the
    # float64 dtype end to end, so its binning engine can be held to 1e-12.
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    probs, labels = softmax_data(2000, 5, seed=0)
    conf, pred = probs.max(-1)
    assert_off_edges(conf, 15)
    ours = M.expected_calibration_error(probs, labels, n_bins=15, norm=norm)
    theirs = tmf.binary_calibration_error(conf, (pred == labels).long(), n_bins=15, norm=norm)
    assert theirs.dtype == torch.float64
    assert ours == pytest.approx(float(theirs), abs=1e-12)
    assert ours == pytest.approx(np_top_label_ece(probs, labels, 15, norm), abs=1e-12)


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_ece_matches_torchmetrics_multiclass_to_float32_precision(norm):
    # multiclass_calibration_error casts confidences to float32 (``confidences.float()``) even for float64 input,
    # so agreement is to float32 rounding only (measured deviation here ~1e-7).
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    probs, labels = softmax_data(2000, 5, seed=0)
    assert_off_edges(probs.max(-1).values, 15)
    ours = M.expected_calibration_error(probs, labels, n_bins=15, norm=norm)
    theirs = float(tmf.multiclass_calibration_error(probs, labels, num_classes=5, n_bins=15, norm=norm))
    assert ours == pytest.approx(theirs, abs=1e-6)


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_streaming_calibration_error_matches_torchmetrics_streaming(norm):
    tmc = pytest.importorskip("torchmetrics.classification")
    ours = M.CalibrationError(n_bins=10, norm=norm)
    binary = tmc.BinaryCalibrationError(n_bins=10, norm=norm)  # float64 states: exact comparison
    multiclass = tmc.MulticlassCalibrationError(num_classes=4, n_bins=10, norm=norm)  # float32 states
    all_probs, all_labels = [], []
    for seed, size in enumerate([100, 257, 64, 300]):
        probs, labels = softmax_data(size, 4, seed=10 + seed)
        conf, pred = probs.max(-1)
        assert_off_edges(conf, 10)
        ours.update(probs, labels)
        binary.update(conf, (pred == labels).long())
        multiclass.update(probs, labels)
        all_probs.append(probs)
        all_labels.append(labels)
    value = float(ours.compute())
    assert value == pytest.approx(float(binary.compute()), abs=1e-12)
    assert value == pytest.approx(float(multiclass.compute()), abs=1e-6)
    assert value == pytest.approx(np_top_label_ece(torch.cat(all_probs), torch.cat(all_labels), 10, norm), abs=1e-12)


def test_torchmetrics_multiclass_sums_bins_in_float32_kdlens_in_float64():
    # On a million float32 probabilities torchmetrics accumulates per-bin confidence sums in float32 and drifts
    # from the float64 value of the very same inputs; kdlens sums in float64 and matches it to rounding.
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    probs32, labels = softmax_data(1_000_000, 10, seed=1, scale=3.0, dtype=torch.float32)
    truth = np_top_label_ece(probs32.double(), labels, 15)  # float64 ECE of the float32 values
    ours = M.expected_calibration_error(probs32, labels, n_bins=15)
    theirs = float(tmf.multiclass_calibration_error(probs32, labels, num_classes=10, n_bins=15))
    assert abs(ours - truth) <= 1e-12
    assert 1e-8 < abs(theirs - truth) < 1e-4  # measured: ~4e-6


def test_torchmetrics_multiclass_is_its_binary_path_on_float32_confidences():
    # Pins down the mechanism behind the previous test: for float64 input, the multiclass API equals the binary
    # API fed float32 confidences, bit for bit.
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    probs, labels = softmax_data(500, 3, seed=2)
    conf, pred = probs.max(-1)
    multiclass = tmf.multiclass_calibration_error(probs, labels, num_classes=3, n_bins=15)
    binary32 = tmf.binary_calibration_error(conf.float(), (pred == labels).long(), n_bins=15)
    assert multiclass.dtype == torch.float32
    assert torch.equal(multiclass, binary32)


def test_torchmetrics_bins_are_left_closed_kdlens_right_closed():
    # Confidences 0.5 (correct), 0.6 (wrong), 0.6 (correct), 4 bins. kdlens, with Guo et al.'s (a, b]:
    # 0.5 -> (0.25, 0.5], gap 0.5; the two 0.6 -> (0.5, 0.75], acc 1/2, gap 0.1: ECE = 0.5/3 + 0.1 * 2/3 = 0.2333.
    # torchmetrics bucketize(right=True) - 1 gives [a, b): all three in [0.5, 0.75), acc 2/3, conf 17/30: 0.1.
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 2])
    ours = M.expected_calibration_error(probs, labels, n_bins=4)
    theirs = float(tmf.multiclass_calibration_error(probs, labels, num_classes=3, n_bins=4))
    assert ours == pytest.approx(0.5 / 3 + 0.1 * 2 / 3, abs=1e-15)
    assert ours == pytest.approx(np_top_label_ece(probs, labels, 4, right_closed=True), abs=1e-15)
    assert theirs == pytest.approx(0.1, abs=1e-6)
    assert theirs == pytest.approx(np_top_label_ece(probs, labels, 4, right_closed=False), abs=1e-6)


def test_torchmetrics_puts_confidence_one_in_a_phantom_bin():
    # Confidence 1.0 (wrong) and 0.95 (correct), 10 bins. kdlens: both in (0.9, 1], acc 1/2, conf 0.975: 0.475.
    # torchmetrics: [0.9, 1) holds 0.95 alone (gap 0.05) and 1.0 lands in an eleventh bin [1, 1] (gap 1), each of
    # weight 1/2: 0.525. "10 bins" there means 11 whenever a confidence is exactly 1.
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.95, 0.05, 0.0]], dtype=torch.float64)
    labels = torch.tensor([1, 0])
    ours = M.expected_calibration_error(probs, labels, n_bins=10)
    theirs = float(tmf.multiclass_calibration_error(probs, labels, num_classes=3, n_bins=10))
    assert ours == pytest.approx(0.475, abs=1e-15)
    assert M.reliability_curve(probs, labels, n_bins=10).count.tolist() == [0] * 9 + [2]
    assert theirs == pytest.approx(0.525, abs=1e-6)


# --------------------------------------------------------------------------------------------------------------
# 3. Top-label ECE vs netcal
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_matches_netcal_off_bin_edges(n_bins):
    netcal_metrics = pytest.importorskip("netcal.metrics")
    probs, labels = softmax_data(3000, 5, seed=3)
    assert_off_edges(probs.max(-1).values, n_bins)
    theirs = netcal_metrics.ECE(bins=n_bins).measure(probs.numpy(), labels.numpy())
    assert M.expected_calibration_error(probs, labels, n_bins=n_bins) == pytest.approx(theirs, abs=1e-12)


def test_ece_matches_netcal_when_labels_cover_three_of_five_classes():
    # netcal stays in multi-class (top-label) mode as long as at least 3 distinct labels are present.
    netcal_metrics = pytest.importorskip("netcal.metrics")
    probs, _ = softmax_data(1000, 5, seed=4)
    labels = torch.tensor(np.random.default_rng(4).choice([0, 2, 3], size=1000))
    assert_off_edges(probs.max(-1).values, 10)
    theirs = netcal_metrics.ECE(bins=10).measure(probs.numpy(), labels.numpy())
    assert M.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(theirs, abs=1e-12)


@pytest.mark.parametrize("present", [[0, 3], [2]])
def test_netcal_raises_when_at_most_two_labels_are_present(present):
    # netcal infers the task from the labels present: <= 2 distinct values means "binary", and binary mode with
    # more than 2 probability columns raises. An evaluation batch of a 5-class model that happens to contain only
    # classes 0 and 3 is still a 5-class top-label problem; kdlens measures it as one.
    netcal_metrics = pytest.importorskip("netcal.metrics")
    probs, _ = softmax_data(500, 5, seed=5)
    labels = torch.tensor(np.random.default_rng(5).choice(present, size=500))
    with pytest.raises(RuntimeError, match="binary classification"):
        netcal_metrics.ECE(bins=10).measure(probs.numpy(), labels.numpy())
    expected = np_top_label_ece(probs, labels, 10)
    assert M.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected, abs=1e-12)


def test_netcal_two_columns_measure_class_one_not_the_top_label():
    # With two columns netcal's "binary" mode bins p[:, 1] against y == 1, a different quantity from top-label ECE.
    # p = (0.45, 0.55) and (0.55, 0.45), both labelled 1. Top label: both confidences 0.55, one right one wrong:
    # |0.5 - 0.55| = 0.05. netcal: p1 = 0.55 and 0.45 in separate bins, gaps 0.45 and 0.55: mean 0.5.
    netcal_metrics = pytest.importorskip("netcal.metrics")
    probs = np.array([[0.45, 0.55], [0.55, 0.45]])
    labels = np.array([1, 1])
    theirs = netcal_metrics.ECE(bins=15).measure(probs, labels)
    assert theirs == pytest.approx(0.5, abs=1e-12)
    assert theirs == pytest.approx(np_binned_error(probs[:, 1], labels == 1, 15, right_closed=False), abs=1e-12)
    assert M.expected_calibration_error(probs, labels, n_bins=15) == pytest.approx(0.05, abs=1e-12)


def test_netcal_bins_are_left_closed_kdlens_right_closed():
    # Same fixture as the torchmetrics edge test; netcal bins with numpy.histogramdd, i.e. [a, b).
    netcal_metrics = pytest.importorskip("netcal.metrics")
    probs = np.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    labels = np.array([0, 1, 2])
    theirs = netcal_metrics.ECE(bins=4).measure(probs, labels)
    assert theirs == pytest.approx(np_top_label_ece(probs, labels, 4, right_closed=False), abs=1e-12)
    assert theirs == pytest.approx(0.1, abs=1e-12)
    assert M.expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(0.5 / 3 + 0.1 * 2 / 3, abs=1e-15)


# --------------------------------------------------------------------------------------------------------------
# 4. Brier score and NLL vs scikit-learn
# --------------------------------------------------------------------------------------------------------------


def test_brier_matches_sklearn_multiclass():
    skm = pytest.importorskip("sklearn.metrics")
    probs, labels = softmax_data(400, 4, seed=6)
    theirs = skm.brier_score_loss(labels.numpy(), probs.numpy(), labels=list(range(4)))
    assert M.brier_score(probs, labels) == pytest.approx(theirs, abs=1e-12)


def test_sklearn_halves_the_binary_brier_score_kdlens_does_not():
    # sklearn's scale_by_half="auto" maps the two-class score to [0, 1]; kdlens keeps sum_k (p_k - 1[y=k])^2 in
    # [0, 2] for every C, so a 2-class and a 3-class score are on the same scale.
    skm = pytest.importorskip("sklearn.metrics")
    probs, labels = softmax_data(300, 2, seed=7)
    ours = M.brier_score(probs, labels)
    assert ours == pytest.approx(2 * skm.brier_score_loss(labels.numpy(), probs.numpy(), labels=[0, 1]), abs=1e-12)
    full = skm.brier_score_loss(labels.numpy(), probs.numpy(), labels=[0, 1], scale_by_half=False)
    assert ours == pytest.approx(full, abs=1e-12)


def test_nll_matches_sklearn_log_loss():
    skm = pytest.importorskip("sklearn.metrics")
    probs, labels = softmax_data(400, 6, seed=8)
    assert float(probs.min()) > 1e-12  # sklearn's clipping to [eps, 1 - eps] is inactive
    theirs = skm.log_loss(labels.numpy(), probs.numpy(), labels=list(range(6)))
    assert M.negative_log_likelihood(probs, labels) == pytest.approx(theirs, abs=1e-12)


def test_sklearn_log_loss_needs_labels_when_classes_are_missing():
    # Labels covering 3 of 6 columns: sklearn refuses without labels=; kdlens reads C from the probabilities.
    skm = pytest.importorskip("sklearn.metrics")
    probs, _ = softmax_data(200, 6, seed=9)
    labels = torch.tensor(np.random.default_rng(9).choice([1, 2, 5], size=200))
    with pytest.raises(ValueError, match="different number of classes"):
        skm.log_loss(labels.numpy(), probs.numpy())
    theirs = skm.log_loss(labels.numpy(), probs.numpy(), labels=list(range(6)))
    assert M.negative_log_likelihood(probs, labels) == pytest.approx(theirs, abs=1e-12)


def test_sklearn_clips_a_zero_probability_kdlens_returns_inf():
    # A true-class probability of exactly 0 has infinite NLL. sklearn clips it to eps = 2.2e-16 and reports
    # -log(eps) = 36.04 for that example, a value that depends only on the float dtype.
    skm = pytest.importorskip("sklearn.metrics")
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    labels = np.array([1, 0])
    theirs = skm.log_loss(labels, probs, labels=[0, 1])
    assert theirs == pytest.approx((-np.log(np.finfo(np.float64).eps) + np.log(2)) / 2, abs=1e-12)
    assert M.negative_log_likelihood(probs, labels) == math.inf
    assert M.negative_log_likelihood(probs, labels, reduction="none")[1].item() == pytest.approx(math.log(2))


# --------------------------------------------------------------------------------------------------------------
# 5. CKA vs ckatorch
# --------------------------------------------------------------------------------------------------------------


def cka_data(n: int, d1: int, d2: int, seed: int):
    """Uncentred x (offset 3) and a noisy linear image y of it, float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d1, generator=g, dtype=torch.float64) + 3.0
    w = torch.randn(d1, d2, generator=g, dtype=torch.float64)
    return x, x @ w + 0.5 * torch.randn(n, d2, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(200, 30, 20), (40, 100, 60)])  # feature route and Gram route in kdlens
def test_linear_cka_matches_ckatorch_cka_base(debiased, shape):
    ckatorch = pytest.importorskip("ckatorch")
    x, y = cka_data(*shape, seed=11)
    theirs = float(ckatorch.cka_base(x, y, kernel="linear", unbiased=debiased))
    assert M.linear_cka(x, y, debiased=debiased) == pytest.approx(theirs, rel=1e-6)


def test_streaming_linear_cka_matches_ckatorch_on_the_concatenated_data():
    ckatorch = pytest.importorskip("ckatorch")
    x, y = cka_data(300, 12, 9, seed=12)
    for debiased in (False, True):
        metric = M.LinearCKA(debiased=debiased)
        for xb, yb in zip(x.split(70), y.split(70), strict=True):
            metric.update(xb, yb)
        theirs = float(ckatorch.cka_base(x, y, unbiased=debiased))
        assert float(metric.compute()) == pytest.approx(theirs, rel=1e-6)


def test_minibatch_cka_matches_ckatorch_cka_batch():
    # Nguyen et al. (2021): sum (equivalently mean) of per-batch unbiased HSICs, then the ratio.
    ckatorch = pytest.importorskip("ckatorch")
    x, y = cka_data(200, 30, 20, seed=13)
    metric = M.MinibatchCKA()
    for xb, yb in zip(x.split(50), y.split(50), strict=True):
        metric.update(xb, yb)
    theirs = float(ckatorch.cka_batch(x.view(4, 50, 30), y.view(4, 50, 20)))
    assert float(metric.compute()) == pytest.approx(theirs, rel=1e-6)
    assert M.linear_cka(x, y, debiased=True) == pytest.approx(float(ckatorch.cka_batch(x[None], y[None])), rel=1e-6)


def test_ckatorch_hsic_method_ignores_unbiased():
    # cka_base's docstring says method does not influence the output, but method="hsic" always uses the biased
    # HSIC (hsic0): with unbiased=True it returns the *biased* CKA. kdlens has one debiased path.
    ckatorch = pytest.importorskip("ckatorch")
    x, y = cka_data(60, 10, 8, seed=14)
    biased, debiased = M.linear_cka(x, y), M.linear_cka(x, y, debiased=True)
    assert abs(biased - debiased) > 1e-3
    assert float(ckatorch.cka_base(x, y, unbiased=True, method="fro_norm")) == pytest.approx(debiased, rel=1e-6)
    assert float(ckatorch.cka_base(x, y, unbiased=True, method="hsic")) == pytest.approx(biased, rel=1e-6)


def test_ckatorch_cka_class_keeps_only_the_last_batch():
    # ckatorch.CKA.__call__ assigns ``cka_epoch[i, j] = cka_batch(x, y)`` for every batch instead of accumulating,
    # so an epoch's value is the last batch's minibatch CKA (stored in float32). kdlens' MinibatchCKA pools every
    # batch. The layer outputs are (batch, tokens, d); cka_batch treats each example's tokens as one minibatch.
    ckatorch = pytest.importorskip("ckatorch")
    from torch.utils.data import DataLoader, TensorDataset

    with torch.random.fork_rng():  # seeded weights without touching the global RNG other tests see
        torch.manual_seed(0)
        first = torch.nn.Sequential(torch.nn.Linear(6, 8)).double()
        second = torch.nn.Sequential(torch.nn.Linear(6, 5)).double()
    g = torch.Generator().manual_seed(15)
    inputs = torch.randn(8, 10, 6, generator=g, dtype=torch.float64)
    inputs[:4] = 10 * inputs[:4] ** 3  # make the first batch dominate the pooled HSICs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ckatorch suggests shuffle=True; order must be fixed here
        result = ckatorch.CKA(first, second, layers=["0"])(DataLoader(TensorDataset(inputs), batch_size=4), epochs=1)
    with torch.no_grad():
        fa, fb = first(inputs), second(inputs)
    last_batch = float(ckatorch.cka_batch(fa[4:], fb[4:]))
    pooled = float(ckatorch.cka_batch(fa, fb))
    metric = M.MinibatchCKA()
    for a, b in zip(fa, fb, strict=True):
        metric.update(a, b)
    assert float(result[0, 0]) == pytest.approx(last_batch, abs=1e-6)
    assert float(metric.compute()) == pytest.approx(pooled, rel=1e-9)
    assert abs(pooled - last_batch) > 1e-2


def np_rbf_cka(x, y, zero_diagonal_in_median: bool) -> float:
    """Biased RBF CKA in numpy. Bandwidth: sigma^2 = median squared distance over all n^2 pairs with the zero
    diagonal and the lower middle element (ckatorch, Kornblith et al.'s reference code), or the numpy median
    distance over distinct pairs i < j, squared (kdlens with sigma=1)."""

    def gram(a):
        a = np.asarray(a, dtype=np.float64)
        sq = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
        if zero_diagonal_in_median:
            width_sq = np.sort(sq.ravel())[(sq.size - 1) // 2]  # torch.median: lower median
        else:
            width_sq = np.median(np.sqrt(sq[np.triu_indices(len(a), 1)])) ** 2
        return np.exp(-sq / (2.0 * width_sq))

    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, l = h @ gram(x) @ h, h @ gram(y) @ h  # noqa: E741
    return float((k * l).sum() / np.sqrt((k * k).sum() * (l * l).sum()))


def test_rbf_bandwidth_median_conventions_differ():
    # Not a bug on either side: two medians. ckatorch follows Kornblith's code (median of all n^2 squared
    # distances, n zeros included: biased low at small n); kdlens uses the median heuristic over distinct pairs.
    ckatorch = pytest.importorskip("ckatorch")
    g = torch.Generator().manual_seed(16)
    x = torch.randn(30, 6, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(6, 4, generator=g, dtype=torch.float64))
    y = y + 0.3 * torch.randn(30, 4, generator=g, dtype=torch.float64)
    theirs = float(ckatorch.cka_base(x, y, kernel="rbf", threshold=1.0))
    ours = M.rbf_cka(x, y, sigma=1.0)
    assert theirs == pytest.approx(np_rbf_cka(x, y, zero_diagonal_in_median=True), rel=1e-9)
    assert ours == pytest.approx(np_rbf_cka(x, y, zero_diagonal_in_median=False), rel=1e-9)
    assert abs(ours - theirs) > 1e-4


# --------------------------------------------------------------------------------------------------------------
# 6. KL / JS vs scipy
# --------------------------------------------------------------------------------------------------------------


def logit_pair(seed: int, n: int = 64, n_classes: int = 7):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(n, n_classes, generator=g, dtype=torch.float64) * 3
    student = teacher + torch.randn(n, n_classes, generator=g, dtype=torch.float64)
    return teacher, student


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("reverse", [False, True])
def test_kl_matches_scipy_rel_entr(temperature, reverse):
    special = pytest.importorskip("scipy.special")
    teacher, student = logit_pair(17)
    p = special.softmax(teacher.numpy() / temperature, axis=1)
    q = special.softmax(student.numpy() / temperature, axis=1)
    expected = special.rel_entr(q, p).sum(1) if reverse else special.rel_entr(p, q).sum(1)
    ours = M.kl_divergence(teacher, student, temperature=temperature, reverse=reverse, reduction="none")
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-12)
    assert M.kl_divergence(teacher, student, temperature=temperature, reverse=reverse) == pytest.approx(
        expected.mean(), abs=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_js_is_the_square_of_scipy_jensenshannon(temperature):
    # scipy's jensenshannon is a *distance*: the square root of the divergence, natural log by default.
    special = pytest.importorskip("scipy.special")
    distance = pytest.importorskip("scipy.spatial.distance")
    teacher, student = logit_pair(18)
    p = special.softmax(teacher.numpy() / temperature, axis=1)
    q = special.softmax(student.numpy() / temperature, axis=1)
    ours = M.js_divergence(teacher, student, temperature=temperature, reduction="none").numpy()
    np.testing.assert_allclose(ours, distance.jensenshannon(p, q, axis=1) ** 2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours / np.log(2), distance.jensenshannon(p, q, axis=1, base=2) ** 2, atol=1e-12)


def test_kl_from_probabilities_overflows_where_kdlens_from_logits_does_not():
    # Student logits (0, -800): exp(-800) underflows to 0 even in float64, so KL computed from probabilities is
    # inf. The true KL(p_t || p_s) with p_t = (1/2, 1/2) is 0.5 (log 0.5 - 0) + 0.5 (log 0.5 + 800) = 400 - ln 2.
    special = pytest.importorskip("scipy.special")
    teacher = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    student = torch.tensor([[0.0, -800.0]], dtype=torch.float64)
    p, q = special.softmax(teacher.numpy(), axis=1), special.softmax(student.numpy(), axis=1)
    assert special.rel_entr(p, q).sum() == math.inf
    assert M.kl_divergence(teacher, student) == pytest.approx(400.0 - math.log(2.0), rel=1e-15)


# --------------------------------------------------------------------------------------------------------------
# 7. Classwise ECE vs plain numpy (Kull et al. 2019)
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_classwise_ece_matches_numpy_reference(norm):
    probs, labels = softmax_data(1500, 4, seed=19)
    assert_off_edges(probs, 15)
    ours = M.classwise_expected_calibration_error(probs, labels, n_bins=15, norm=norm)
    assert ours == pytest.approx(np_classwise_ece(probs, labels, 15, norm), abs=1e-12)


def test_classwise_ece_averages_over_absent_classes_too():
    # Labels cover classes {0, 2} of 4; classes 1 and 3 still count (their probabilities should be ~0).
    probs, _ = softmax_data(800, 4, seed=20)
    labels = torch.tensor(np.random.default_rng(20).choice([0, 2], size=800))
    ours = M.classwise_expected_calibration_error(probs, labels, n_bins=10)
    assert ours == pytest.approx(np_classwise_ece(probs, labels, 10), abs=1e-12)


def test_classwise_ece_edges_follow_the_right_closed_policy():
    # Exact edge values, including 0 and 1: p = 0 is in the first bin, 0.5 closes (0.25, 0.5], 1.0 the last bin.
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.75, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2])
    # By hand (l1): class 0 gaps 0.125 (w 1/2: 0.25 and 0.0 together), 0.5 (w 1/4), 0 -> 0.1875; class 1: 0 (w 1/4),
    # 0.5 (w 1/2), 0.25 (w 1/4) -> 0.3125; class 2: 0 (w 3/4), 0.5 (w 1/4) -> 0.125. Mean 0.625 / 3.
    assert M.classwise_expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(0.625 / 3, abs=1e-15)
    for norm in ("l1", "l2", "max"):
        ours = M.classwise_expected_calibration_error(probs, labels, n_bins=4, norm=norm)
        assert ours == pytest.approx(np_classwise_ece(probs, labels, 4, norm), abs=1e-15)
