"""Distillation losses: each checked against its equation (independent float64 / numpy references, captum for the
attribution maps), its invariances, its reductions and masks, its gradients, and its errors on bad input."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from kdlens.distill import losses as L
from kdlens.measures import linear_cka

FAST = settings(max_examples=30, deadline=None)


def randn(*shape, seed=0, dtype=torch.float64, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def logits_pair(b=6, c=5, seed=0, scale=2.0):
    return randn(b, c, seed=seed, scale=scale), randn(b, c, seed=seed + 1000, scale=scale)


def softmax_np(z: np.ndarray, temperature: float) -> np.ndarray:
    z = z / temperature
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl_np(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p * (np.log(p) - np.log(q))).sum(-1)


def random_orthogonal(d, seed=0):
    q, _ = torch.linalg.qr(randn(d, d, seed=seed))
    return q


# ------------------------------------------------------------------------------------------------ kd and friends

@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 10.0])
def test_kd_equals_the_kl_div_formula(temperature):
    s, t = logits_pair()
    expected = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                        reduction="batchmean", log_target=True) * temperature**2
    torch.testing.assert_close(L.kd_loss(s, t, temperature=temperature), expected, rtol=1e-12, atol=1e-12)


def test_kd_is_zero_on_identical_logits():
    s, _ = logits_pair()
    assert float(L.kd_loss(s, s.clone())) == pytest.approx(0.0, abs=1e-12)


@FAST
@given(st.integers(1, 8), st.integers(2, 10), st.floats(0.1, 20.0), st.integers(0, 2**31 - 1))
def test_kd_is_nonnegative(b, c, temperature, seed):
    s, t = logits_pair(b, c, seed, scale=5.0)
    assert float(L.kd_loss(s, t, temperature=temperature, reduction="none").min()) >= -1e-12


def test_kd_gradient_scale_is_roughly_independent_of_a_large_temperature():
    # Hinton et al. 2015 sec. 2: d(T^2 KL)/ds = T (q - p) -> (s - t) / C for large T and zero-mean logits
    s, t = logits_pair(4, 5)
    s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)
    norms = []
    for temperature in (20.0, 40.0):
        s_ = s.clone().requires_grad_(True)
        L.kd_loss(s_, t, temperature=temperature).backward()
        norms.append(float(s_.grad.norm()))
    assert norms[0] == pytest.approx(norms[1], rel=0.02)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_reverse_kl_matches_numpy(temperature):
    s, t = logits_pair()
    p_s, p_t = softmax_np(s.numpy(), temperature), softmax_np(t.numpy(), temperature)
    expected = kl_np(p_s, p_t).mean() * temperature**2
    assert float(L.reverse_kl_loss(s, t, temperature=temperature)) == pytest.approx(expected, rel=1e-10)
    assert float(L.reverse_kl_loss(s, s.clone())) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------ generalized JSD

def jsd_np(s: torch.Tensor, t: torch.Tensor, beta: float, temperature: float) -> float:
    """GKD eq. 1 in plain numpy: beta KL(p_t || m) + (1 - beta) KL(p_s || m), m = beta p_t + (1 - beta) p_s."""
    p_s, p_t = softmax_np(s.numpy(), temperature), softmax_np(t.numpy(), temperature)
    m = beta * p_t + (1 - beta) * p_s
    return float((beta * kl_np(p_t, m) + (1 - beta) * kl_np(p_s, m)).mean() * temperature**2)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_jsd_matches_the_gkd_equation(beta):
    s, t = logits_pair()
    got = float(L.generalized_jsd_loss(s, t, beta=beta, temperature=2.0))
    assert got == pytest.approx(jsd_np(s, t, beta, 2.0), rel=1e-10)


def test_jsd_is_zero_on_identical_and_symmetric_at_one_half():
    s, t = logits_pair()
    assert float(L.generalized_jsd_loss(s, s.clone(), beta=0.3)) == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(L.generalized_jsd_loss(s, t), L.generalized_jsd_loss(t, s), rtol=1e-12, atol=0)


@FAST
@given(st.floats(0.01, 0.99), st.floats(0.5, 5.0), st.integers(0, 2**31 - 1))
def test_jsd_is_bounded_by_the_binary_entropy_of_beta(beta, temperature, seed):
    s, t = logits_pair(4, 6, seed, scale=30.0)  # near one-hot: close to the bound
    bound = -(beta * math.log(beta) + (1 - beta) * math.log(1 - beta)) * temperature**2  # ln 2 T^2 at beta = 1/2
    values = L.generalized_jsd_loss(s, t, beta=beta, temperature=temperature, reduction="none")
    assert float(values.min()) >= -1e-12
    assert float(values.max()) <= bound + 1e-9


def test_jsd_endpoints_are_forward_and_reverse_kl_and_the_limits_of_the_scaled_jsd():
    s, t = logits_pair()
    forward, reverse = L.kd_loss(s, t, temperature=2.0), L.reverse_kl_loss(s, t, temperature=2.0)
    torch.testing.assert_close(L.generalized_jsd_loss(s, t, beta=0.0, temperature=2.0), forward)
    torch.testing.assert_close(L.generalized_jsd_loss(s, t, beta=1.0, temperature=2.0), reverse)
    eps = 1e-5
    near_0 = float(L.generalized_jsd_loss(s, t, beta=eps, temperature=2.0)) / eps
    near_1 = float(L.generalized_jsd_loss(s, t, beta=1 - eps, temperature=2.0)) / eps
    assert near_0 == pytest.approx(float(forward), rel=1e-3)
    assert near_1 == pytest.approx(float(reverse), rel=1e-3)


def test_jsd_at_one_half_saturates_at_ln2_for_disjoint_distributions():
    s, t = torch.tensor([[40.0, 0.0]]), torch.tensor([[0.0, 40.0]])
    assert float(L.generalized_jsd_loss(s, t, temperature=1.0)) == pytest.approx(math.log(2), rel=1e-6)


# ------------------------------------------------------------------------------------------------ labels

@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_hard_label_equals_cross_entropy(label_smoothing):
    s, _ = logits_pair()
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    expected = F.cross_entropy(s, labels, label_smoothing=label_smoothing)
    torch.testing.assert_close(L.hard_label_loss(s, labels, label_smoothing=label_smoothing), expected)


def test_mdca_and_dca_on_a_hand_computed_batch():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    # mean probs (0.4, 0.4, 0.2) vs class frequencies (0.5, 0, 0.5): |diffs| 0.1, 0.4, 0.3 -> mean 0.8 / 3
    assert float(L.calibration_penalty(probs.log(), labels, kind="mdca")) == pytest.approx(0.8 / 3, rel=1e-12)
    # mean confidence (0.7 + 0.6) / 2 = 0.65 vs accuracy 1/2
    assert float(L.calibration_penalty(probs.log(), labels, kind="dca")) == pytest.approx(0.15, rel=1e-12)


def test_mdca_is_zero_when_mean_probabilities_equal_class_frequencies():
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5], [0.5, 0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1])
    assert float(L.calibration_penalty(probs.log(), labels)) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------ features

def test_feature_projector_shapes():
    conv = L.FeatureProjector(4, 8, kind="conv")
    assert conv(torch.randn(2, 4, 5, 5)).shape == (2, 8, 5, 5)
    linear = L.FeatureProjector(4, 8, kind="linear")
    assert linear(torch.randn(2, 4)).shape == (2, 8)
    assert linear(torch.randn(2, 3, 4)).shape == (2, 3, 8)
    with pytest.raises(ValueError, match=r"Expected `student_feature` to be of shape \(B, 4, H, W\)"):
        conv(torch.randn(2, 5, 5, 5))


def test_fitnet_is_zero_for_identical_and_mse_otherwise():
    s, t = randn(3, 4, 6, 6, seed=1), randn(3, 4, 6, 6, seed=2)
    assert float(L.fitnet_loss(s, s.clone())) == 0.0
    torch.testing.assert_close(L.fitnet_loss(s, t), F.mse_loss(s, t))


def test_fitnet_pools_the_larger_map_to_the_smaller():
    s, t = randn(3, 4, 4, 4, seed=1), randn(3, 4, 8, 8, seed=2)
    torch.testing.assert_close(L.fitnet_loss(s, t), F.mse_loss(s, F.avg_pool2d(t, 2)))


def test_attention_transfer_matches_the_authors_at_loss_times_positions():
    s, t = randn(3, 4, 5, 5, seed=1), randn(3, 7, 5, 5, seed=2)

    def at(x):  # Zagoruyko & Komodakis' code
        return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))

    authors = (at(s) - at(t)).pow(2).mean()  # averaged over B * H * W
    torch.testing.assert_close(L.attention_transfer_loss(s, t), authors * 25)


def test_attention_transfer_invariances():
    s, t = randn(3, 4, 6, 6, seed=1), randn(3, 4, 6, 6, seed=2)
    assert float(L.attention_transfer_loss(s, s.clone())) == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(L.attention_transfer_loss(3.0 * s, 0.5 * t), L.attention_transfer_loss(s, t))
    # channel counts may differ: the teacher's channels repeated twice carry the same attention
    assert float(L.attention_transfer_loss(s, torch.cat([s, s], 1), p=1.5)) == pytest.approx(0.0, abs=1e-12)
    # spatial sizes may differ: each 2 x 2 block of a constant-per-block map pools to the same attention
    assert float(L.attention_transfer_loss(s, s.repeat_interleave(2, -1).repeat_interleave(2, -2))) < 1e-12


def test_rkd_distance_is_invariant_to_uniform_scaling_and_rotation():
    t = randn(8, 5, seed=1)
    assert float(L.rkd_distance_loss(2.5 * t @ random_orthogonal(5), t)) == pytest.approx(0.0, abs=1e-12)
    assert float(L.rkd_distance_loss(randn(8, 3, 2, seed=2), t)) > 0  # any shape, flattened


def test_rkd_distance_matches_a_loop_reference():
    s, t = randn(5, 3, seed=1), randn(5, 4, seed=2)
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]

    def psi(e):
        d = np.array([np.linalg.norm(e[i] - e[j]) for i, j in pairs])
        return d / d.mean()

    diff = np.abs(psi(s.numpy()) - psi(t.numpy()))
    expected = np.where(diff < 1, 0.5 * diff**2, diff - 0.5).mean()
    assert float(L.rkd_distance_loss(s, t)) == pytest.approx(expected, rel=1e-10)


def test_rkd_angle_on_three_points_by_hand():
    right = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # angles 90, 45, 45 degrees
    equilateral = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]], dtype=torch.float64)  # cos 1/2
    diffs = np.array([0.5 - 0.0, 0.5 - math.sqrt(0.5), 0.5 - math.sqrt(0.5)])  # each vertex counted twice
    expected = (0.5 * diffs**2).mean()  # Huber below 1 is quadratic
    assert float(L.rkd_angle_loss(equilateral, right)) == pytest.approx(expected, rel=1e-12)


def test_rkd_angle_is_invariant_to_scaling_and_translation():
    t = randn(7, 4, seed=1)
    student = 0.3 * t @ random_orthogonal(4) + 5.0
    assert float(L.rkd_angle_loss(student, t)) == pytest.approx(0.0, abs=1e-12)


def test_similarity_preserving_is_zero_under_an_orthogonal_map_and_matches_tung_and_mori():
    t = randn(6, 2, 3, 3, seed=1)  # (B, C, H, W), flattened to (6, 18)
    student = 2.0 * (t.flatten(1) @ random_orthogonal(18))
    assert float(L.similarity_preserving_loss(student, t)) == pytest.approx(0.0, abs=1e-12)
    s = randn(6, 5, seed=2)
    g_s, g_t = F.normalize(s @ s.T), F.normalize(t.flatten(1) @ t.flatten(1).T)
    torch.testing.assert_close(L.similarity_preserving_loss(s, t), (g_s - g_t).square().sum() / 36)


@pytest.mark.parametrize(("d_s", "d_t"), [(3, 4), (40, 50)])  # feature-space and Gram routes
def test_cka_loss_is_one_minus_the_measure(d_s, d_t):
    s, t = randn(12, d_s, seed=1), randn(12, d_t, seed=2)
    t[:, :3] += s[:, :3]  # related, so CKA is away from 0
    assert 1.0 - float(L.cka_alignment_loss(s, t)) == pytest.approx(linear_cka(s, t), abs=1e-5, rel=1e-10)


def test_cka_loss_is_zero_under_orthogonal_map_scaling_and_translation():
    t = randn(20, 6, seed=1)
    assert float(L.cka_alignment_loss(3.0 * t @ random_orthogonal(6) + 1.0, t)) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------ attribution maps

class TinyNet(nn.Module):
    def __init__(self, seed=0, width=3):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(2, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.conv2(self.conv1(x).relu()).relu().mean((2, 3)))


def forward_with(model, x, layer):
    acts = {}
    handle = layer.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, acts["a"]


def test_gradcam_on_a_hand_built_score():
    # score = sum_k w_k mean_{h,w}(A_k): alpha_k = w_k / (h w), map = ReLU(sum_k w_k A_k / (h w))
    acts = randn(2, 3, 4, 5, seed=1).requires_grad_(True)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    score = (acts.mean((2, 3)) * w).sum(1)
    expected = F.relu((w[None, :, None, None] * acts.detach()).sum(1) / 20)
    torch.testing.assert_close(L.gradcam_map(score, acts), expected)


def test_gradcam_matches_captum():
    captum_attr = pytest.importorskip("captum.attr")
    model = TinyNet().double().eval()
    x, labels = randn(4, 2, 6, 6, seed=3), torch.tensor([0, 1, 2, 1])
    logits, acts = forward_with(model, x, model.conv2)
    ours = L.gradcam_map(logits.gather(1, labels[:, None])[:, 0], acts)
    theirs = captum_attr.LayerGradCam(model, model.conv2).attribute(x, target=labels, relu_attributions=True)
    torch.testing.assert_close(ours, theirs[:, 0])


def test_input_gradient_of_a_linear_model_is_the_absolute_weights():
    w = randn(5, seed=1)
    x = randn(3, 5, seed=2).requires_grad_(True)
    torch.testing.assert_close(L.input_gradient_map(x @ w, x), w.abs().expand(3, 5))


def test_input_gradient_matches_captum_saliency_summed_over_channels():
    captum_attr = pytest.importorskip("captum.attr")
    model = TinyNet().double().eval()
    x, labels = randn(4, 2, 6, 6, seed=3).requires_grad_(True), torch.tensor([0, 1, 2, 1])
    ours = L.input_gradient_map(model(x).gather(1, labels[:, None])[:, 0], x)
    theirs = captum_attr.Saliency(model).attribute(x.detach().requires_grad_(True), target=labels, abs=True)
    torch.testing.assert_close(ours, theirs.sum(1))


def test_attribution_alignment_normalises_scale_and_pools_sizes():
    m_s, m_t = randn(3, 4, 4, seed=1).abs(), randn(3, 4, 4, seed=2).abs()
    assert float(L.attribution_alignment_loss(m_s, 7.0 * m_s)) == pytest.approx(0.0, abs=1e-12)
    u_s, u_t = F.normalize(m_s.flatten(1)), F.normalize(m_t.flatten(1))
    torch.testing.assert_close(L.attribution_alignment_loss(m_s, m_t), (u_s - u_t).square().sum(1).mean())
    big = m_t.repeat_interleave(2, -1).repeat_interleave(2, -2)  # (3, 8, 8), pools back to m_t
    torch.testing.assert_close(L.attribution_alignment_loss(m_s, big), L.attribution_alignment_loss(m_s, m_t))


# ------------------------------------------------------------------------------------------------ gradients

LOGIT_LOSSES = {
    "kd": lambda s, t, y: L.kd_loss(s, t),
    "reverse_kl": lambda s, t, y: L.reverse_kl_loss(s, t, temperature=2.0),
    "jsd": lambda s, t, y: L.generalized_jsd_loss(s, t, beta=0.3),
    "hard_label": lambda s, t, y: L.hard_label_loss(s, y, label_smoothing=0.1),
    "mdca": lambda s, t, y: L.calibration_penalty(s, y),
    "dca": lambda s, t, y: L.calibration_penalty(s, y, kind="dca"),
}
FEATURE_LOSSES = {
    "fitnet": L.fitnet_loss,
    "attention": L.attention_transfer_loss,
    "rkd_distance": L.rkd_distance_loss,
    "rkd_angle": L.rkd_angle_loss,
    "similarity": L.similarity_preserving_loss,
    "cka": L.cka_alignment_loss,
    "attribution": lambda s, t: L.attribution_alignment_loss(s.sum(1).abs(), t.sum(1).abs()),
}


def assert_useful_grad(x):
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", sorted(LOGIT_LOSSES))
def test_logit_losses_give_finite_nonzero_gradients(name):
    s, t = logits_pair(6, 5)
    s = s.float().requires_grad_(True)
    LOGIT_LOSSES[name](s, t.float(), torch.tensor([0, 1, 2, 3, 4, 0])).backward()
    assert_useful_grad(s)


@pytest.mark.parametrize("name", sorted(FEATURE_LOSSES))
def test_feature_losses_give_finite_nonzero_gradients(name):
    s = randn(5, 4, 3, 3, seed=1, dtype=torch.float32).relu().requires_grad_(True)  # ReLU zeros are common
    t = randn(5, 4, 3, 3, seed=2, dtype=torch.float32).relu()
    FEATURE_LOSSES[name](s, t).backward()
    assert_useful_grad(s)


def test_gradcam_alignment_trains_the_student_conv_weights_by_double_backprop():
    teacher, student = TinyNet(seed=0).eval(), TinyNet(seed=1, width=5)
    x, labels = randn(4, 2, 6, 6, seed=3, dtype=torch.float32), torch.tensor([0, 1, 2, 1])
    t_logits, t_acts = forward_with(teacher, x, teacher.conv2)
    t_map = L.gradcam_map(t_logits.gather(1, labels[:, None])[:, 0], t_acts).detach()
    s_logits, s_acts = forward_with(student, x, student.conv2)
    s_map = L.gradcam_map(s_logits.gather(1, labels[:, None])[:, 0], s_acts, create_graph=True)
    L.attribution_alignment_loss(s_map, t_map).backward()
    assert_useful_grad(student.conv1.weight)
    assert_useful_grad(student.conv2.weight)


# ------------------------------------------------------------------------------------------------ reductions, masks

def test_reductions_and_masks():
    s, t = logits_pair(6, 5)
    per_example = L.kd_loss(s, t, reduction="none")
    assert per_example.shape == (6,)
    torch.testing.assert_close(L.kd_loss(s, t, reduction="sum"), per_example.sum())
    torch.testing.assert_close(L.kd_loss(s, t), per_example.mean())
    mask = torch.tensor([True, False, True, True, False, False])
    torch.testing.assert_close(L.kd_loss(s, t, mask=mask), per_example[mask].mean())
    torch.testing.assert_close(L.kd_loss(s, t, reduction="sum", mask=mask), per_example[mask].sum())
    torch.testing.assert_close(L.kd_loss(s, t, reduction="none", mask=mask), per_example * mask)
    weights = torch.tensor([1.0, 0.0, 2.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    expected = (per_example * weights).sum() / weights.sum()
    torch.testing.assert_close(L.kd_loss(s, t, mask=weights), expected)
    # a masked-out example cannot poison the batch, and an empty mask gives 0, not NaN
    assert float(L.kd_loss(s, t, mask=torch.zeros(6, dtype=torch.bool))) == 0.0


@pytest.mark.parametrize("loss", [
    lambda s, t, **kw: L.reverse_kl_loss(s, t, **kw),
    lambda s, t, **kw: L.generalized_jsd_loss(s, t, **kw),
    lambda s, t, **kw: L.hard_label_loss(s, torch.tensor([0, 1, 2, 3, 4, 0]), **kw),
    lambda s, t, **kw: L.fitnet_loss(s, t, **kw),
    lambda s, t, **kw: L.attention_transfer_loss(s[:, None, :, None], t[:, None, :, None], **kw),
    lambda s, t, **kw: L.attribution_alignment_loss(s.abs(), t.abs(), **kw),
], ids=["reverse_kl", "jsd", "hard_label", "fitnet", "attention", "attribution"])
def test_every_per_example_loss_reduces_and_masks_alike(loss):
    s, t = logits_pair(6, 5)
    per_example = loss(s, t, reduction="none")
    mask = torch.tensor([True, False, True, True, False, False])
    assert per_example.shape == (6,)
    torch.testing.assert_close(loss(s, t, reduction="sum"), per_example.sum())
    torch.testing.assert_close(loss(s, t, mask=mask), per_example[mask].mean())


# ------------------------------------------------------------------------------------------------ bad inputs

def test_mismatched_batch_sizes():
    with pytest.raises(ValueError, match="`student_logits` and `teacher_logits` to be the same batch size, but got 6 "
                                         "and 5"):
        L.kd_loss(randn(6, 3), randn(5, 3))
    with pytest.raises(ValueError, match="`student_feature` and `teacher_feature` to be the same batch size"):
        L.cka_alignment_loss(randn(6, 3), randn(5, 3))


def test_mismatched_class_counts():
    with pytest.raises(ValueError, match="scores over the same classes, but got 3 and 4 classes"):
        L.generalized_jsd_loss(randn(6, 3), randn(6, 4))


def test_nan_logits():
    bad = randn(6, 3)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="Expected `teacher_logits` to be finite"):
        L.kd_loss(randn(6, 3), bad)
    with pytest.raises(ValueError, match="Expected `student_logits` to be finite"):
        L.hard_label_loss(bad, torch.zeros(6, dtype=torch.long))


def test_non_positive_temperature():
    with pytest.raises(ValueError, match="Expected `temperature` to be a positive finite number, but got 0"):
        L.kd_loss(randn(6, 3), randn(6, 3), temperature=0)


def test_beta_outside_the_unit_interval():
    with pytest.raises(ValueError, match=r"Expected `beta` to be in \[0, 1\].*, but got 1.5"):
        L.generalized_jsd_loss(randn(6, 3), randn(6, 3), beta=1.5)


def test_unknown_reduction_and_kind():
    with pytest.raises(ValueError, match="Expected `reduction` to be one of 'mean', 'sum', 'none', but got 'avg'"):
        L.kd_loss(randn(6, 3), randn(6, 3), reduction="avg")
    with pytest.raises(ValueError, match="Expected `kind` to be one of 'mdca', 'dca', but got 'ece'"):
        L.calibration_penalty(randn(6, 3), torch.zeros(6, dtype=torch.long), kind="ece")
    with pytest.raises(ValueError, match="Expected `kind` to be one of 'conv', 'linear'"):
        L.FeatureProjector(3, 4, kind="mlp")


def test_bad_labels_and_masks():
    with pytest.raises(ValueError, match=r"Expected `labels` to be class indices in \[0, 2\], but got values in"):
        L.hard_label_loss(randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 0]))
    with pytest.raises(TypeError, match="Expected `labels` to be an integer tensor"):
        L.hard_label_loss(randn(6, 3), torch.zeros(6))
    with pytest.raises(ValueError, match=r"Expected `mask` to be a tensor of shape \(6,\)"):
        L.kd_loss(randn(6, 3), randn(6, 3), mask=torch.ones(5, dtype=torch.bool))


def test_feature_errors_name_the_fix():
    with pytest.raises(ValueError, match="of the teacher's width 8.*FeatureProjector"):
        L.fitnet_loss(randn(2, 4, 3, 3), randn(2, 8, 3, 3))
    with pytest.raises(ValueError, match="at least 2 examples"):
        L.rkd_distance_loss(randn(1, 4), randn(1, 4))
    with pytest.raises(ValueError, match="at least 3 examples"):
        L.rkd_angle_loss(randn(2, 4), randn(2, 4))
    with pytest.raises(ValueError, match="Expected `student_feature` to be a 4-D conv map"):
        L.attention_transfer_loss(randn(2, 4), randn(2, 4, 3, 3))


def test_attribution_of_a_graph_free_score_says_how_to_fix_it():
    acts = randn(2, 3, 4, 4)  # e.g. a frozen teacher run on inputs that do not require grad
    with pytest.raises(ValueError, match="Expected `score` to be connected to `activations` by autograd.*"
                                         r"requires_grad_\(True\)"):
        L.gradcam_map(acts.mean((1, 2, 3)), acts)
