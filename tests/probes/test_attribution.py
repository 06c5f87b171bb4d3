"""Attribution probes: against captum on the same models and inputs, against hand computations on tiny models
(Grad-CAM++, embedding x gradient), the completeness axiom, hygiene (hooks, modes, .grad) and one test per bad input.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from kdlens.lab.cnn import SmallCNN
from kdlens.probes import (
    DEFAULT_TARGET,
    EmbeddingXGradient,
    GradCAM,
    GradCAMPlusPlus,
    InputXGradient,
    IntegratedGradients,
    resolve_targets,
    spatial_map,
)
from kdlens.probes.gradients import quadrature

captum_attr = pytest.importorskip("captum.attr")

N_CLASSES = 5


def cnn(train: bool = True) -> nn.Module:
    """Float64 CNN in train mode (BatchNorm makes an eval-mode slip visible)."""
    torch.manual_seed(0)
    net = SmallCNN(n_classes=N_CLASSES, widths=(4, 6, 8), convs_per_block=1).double()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.train(train)


def images(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


TARGET = torch.tensor([0, 1, 2, 3, 4, 1])


def mlp() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.Softplus(), nn.Linear(8, 4)).double()


# --------------------------------------------------------------------------------------------------------------
# Against captum
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["block3", "block2"])
@pytest.mark.parametrize("target", [2, TARGET])
def test_gradcam_equals_captum_layer_gradcam(layer, target):
    net, x = cnn(), images()
    ours = GradCAM(net, layer).attribute(x, target)
    theirs = captum_attr.LayerGradCam(net.eval(), getattr(net, layer)).attribute(x, target, relu_attributions=True)
    assert ours.shape == (6, *theirs.shape[2:]) and ours.dtype == torch.float64
    torch.testing.assert_close(ours, theirs[:, 0], rtol=1e-9, atol=1e-12)
    assert ours.abs().sum() > 0


def test_gradcam_on_a_model_that_views_its_activations():
    """Such models cannot run on channels-last images (kdlens's fast path); GradCAM falls back to the layout given."""

    class Viewing(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            a = self.conv(x)
            return self.head(a.view(a.shape[0], -1))

    torch.manual_seed(10)
    net, x = Viewing().double(), images()
    with pytest.raises(RuntimeError, match="view"):
        net(x.contiguous(memory_format=torch.channels_last))
    theirs = captum_attr.LayerGradCam(net, net.conv).attribute(x, 1, relu_attributions=True)
    torch.testing.assert_close(GradCAM(net, "conv").attribute(x, 1), theirs[:, 0])


def test_gradcam_keeps_the_activation_when_later_code_works_in_place():
    class InPlace(nn.Module):  # torchvision style: out += identity; relu(inplace=True)
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Linear(4, 3)

        def forward(self, x):
            out = self.conv(x)
            out += 0.5
            return self.head(self.relu(out).mean((2, 3)))

    torch.manual_seed(11)
    net, x = InPlace().double(), images()
    acts = net.conv(x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(net.head(torch.relu(acts + 0.5).mean((2, 3)))[:, 2].sum(), acts)
    expected = torch.relu((g.mean((2, 3), keepdim=True) * acts.detach()).sum(1))
    torch.testing.assert_close(GradCAM(net, "conv").attribute(x, 2), expected)


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
def test_input_x_gradient_equals_captum():
    net, x = cnn(), images()
    ours = InputXGradient(net).attribute(x, TARGET)
    theirs = captum_attr.InputXGradient(net.eval()).attribute(x, target=TARGET)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
@pytest.mark.parametrize("internal_batch_size", [None, 4, 13])  # 4 < B: examples split; 13: 2 steps a chunk
def test_integrated_gradients_equals_captum(method, internal_batch_size):
    net, x = cnn(), images()
    baselines = 0.5 * torch.rand(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ig = IntegratedGradients(net, n_steps=20, method=method, internal_batch_size=internal_batch_size)
    ours, delta = ig.attribute(x, TARGET, baselines=baselines, return_convergence_delta=True)
    theirs, their_delta = captum_attr.IntegratedGradients(net.eval()).attribute(
        x, baselines=baselines, target=TARGET, n_steps=20, method=method, return_convergence_delta=True)
    # captum casts its step sizes to float32; ours keep the inputs' float64
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(delta, their_delta, rtol=1e-5, atol=1e-8)
    assert delta.shape == (6,)


def test_integrated_gradients_float32_matches_captum_with_a_shared_baseline():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3))
    x = torch.randn(5, 3, 4)
    ours = IntegratedGradients(net, n_steps=7, method="riemann_trapezoid").attribute(x, 1, baselines=x[0])
    theirs = captum_attr.IntegratedGradients(net).attribute(x, baselines=x[:1].expand_as(x), target=1, n_steps=7,
                                                            method="riemann_trapezoid")
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                    "riemann_trapezoid"])
def test_quadrature_is_captums(method):
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters(method)
    assert quadrature(method, 9) == (alphas(9), step_sizes(9))


# --------------------------------------------------------------------------------------------------------------
# Axioms and hand computations
# --------------------------------------------------------------------------------------------------------------


def test_integrated_gradients_completeness():
    net = mlp()
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    attr, delta = IntegratedGradients(net, n_steps=64).attribute(x, [0, 1, 2, 3], return_convergence_delta=True)
    with torch.no_grad():
        gap = net(x)[torch.arange(4), [0, 1, 2, 3]] - net(torch.zeros_like(x))[:, :4].diagonal()
    torch.testing.assert_close(attr.sum(1), gap, rtol=1e-10, atol=1e-10)
    assert delta.abs().max() < 1e-10


def test_integrated_gradients_of_a_linear_model_is_weight_times_displacement():
    net = nn.Linear(5, 3).double()
    x, base = torch.randn(2, 5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    attr = IntegratedGradients(net, n_steps=2).attribute(x, 2, baselines=base)
    torch.testing.assert_close(attr, net.weight[2].detach() * (x - base))


def test_gradcam_plus_plus_matches_the_formula_by_hand():
    """Layer: a conv; head: linear on the flattened map, so g = d score / d A = W[c] reshaped, by hand."""
    torch.manual_seed(6)
    conv, head = nn.Conv2d(2, 3, 3, padding=1).double(), nn.Linear(3 * 4 * 4, 4).double()
    with torch.no_grad():
        head.weight[1, :16] = 0  # channel 0 has no gradient for class 1: alpha is 0/0 there -> 0
    net = nn.Sequential(conv, nn.Flatten(), head)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    target = np.array([1, 0, 3])
    ours = GradCAMPlusPlus(net, "0").attribute(x, torch.as_tensor(target)).numpy()

    a = conv(x).detach().numpy()  # (B, K, h, w)
    g = head.weight.detach().numpy()[target].reshape(3, 3, 4, 4)  # (B, K, h, w)
    denominator = 2 * g**2 + a.sum(axis=(2, 3), keepdims=True) * g**3
    alpha = np.divide(g**2, denominator, out=np.zeros_like(g), where=denominator != 0)
    weights = (alpha * np.maximum(g, 0)).sum(axis=(2, 3), keepdims=True)
    expected = np.maximum((weights * a).sum(1), 0)
    assert np.isfinite(ours).all() and expected.max() > 0
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)
    # Grad-CAM on the same model: alpha_k is the spatial mean of g
    plain = GradCAM(net, "0").attribute(x, torch.as_tensor(target)).numpy()
    np.testing.assert_allclose(plain, np.maximum((g.mean(axis=(2, 3), keepdims=True) * a).sum(1), 0), rtol=1e-10)


def vit_like():
    """Tokens (B, 1 + 4, D): a CLS token and a 2 x 2 grid; logits from a linear read of every token."""
    torch.manual_seed(7)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Linear(3, 4)
            self.cls = nn.Parameter(torch.randn(1, 1, 4))
            self.block = nn.Identity()
            self.head = nn.Linear(5 * 4, 3)

        def forward(self, x):  # x: (B, 3, 2, 2) -> tokens (B, 5, 4)
            tokens = torch.cat([self.cls.expand(x.shape[0], 1, 4), self.patch(x.flatten(2).transpose(1, 2))], 1)
            return self.head(torch.tanh(self.block(tokens)).flatten(1))

    return Tiny().double()


def to_grid(a):
    return a[:, 1:].reshape(a.shape[0], 2, 2, -1).permute(0, 3, 1, 2)


def test_gradcam_reshapes_token_activations():
    net, x = vit_like(), torch.randn(2, 3, 2, 2, dtype=torch.float64)
    maps = GradCAM(net, "block", reshape=to_grid).attribute(x, 1)
    tokens = torch.cat([net.cls.expand(2, 1, 4), net.patch(x.flatten(2).transpose(1, 2))], 1).detach()
    (g,) = torch.autograd.grad(net.head(torch.tanh(tokens.requires_grad_()).flatten(1))[:, 1].sum(), tokens)
    expected = torch.relu((to_grid(g).mean((2, 3), keepdim=True) * to_grid(tokens.detach())).sum(1))
    torch.testing.assert_close(maps, expected)
    with pytest.raises(ValueError, match="Pass reshape="):
        GradCAM(net, "block").attribute(x, 1)


class BagOfEmbeddings(nn.Module):
    """Embedding -> mean over tokens -> linear: d score / d e_t = W[c] / T, by hand."""

    def __init__(self, vocab=11, dim=4, classes=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids, attention_mask=None):
        return {"logits": self.head(self.embed(input_ids).mean(1))}


class CausalMeanLM(nn.Module):
    """Embedding -> causal running mean -> linear to the vocabulary; logits (B, T, V) in ``.logits``."""

    def __init__(self, vocab=11, dim=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.unembed = nn.Linear(dim, vocab)

    def forward(self, ids):
        e = self.embed(ids)  # (B, T, D)
        h = e.cumsum(1) / torch.arange(1, ids.shape[1] + 1)[:, None]
        return SimpleNamespace(logits=self.unembed(h))


def test_embedding_x_gradient_classifier_by_hand():
    torch.manual_seed(8)
    net = BagOfEmbeddings().double()
    ids = torch.randint(0, 11, (3, 5))
    target = torch.tensor([2, 0, 1])
    attr = EmbeddingXGradient(net, "embed").attribute({"input_ids": ids, "attention_mask": torch.ones(3, 5)}, target)
    e = net.embed(ids).detach()  # (B, T, D)
    expected = (e * net.head.weight.detach()[target][:, None, :]).sum(-1) / 5
    torch.testing.assert_close(attr, expected)
    torch.testing.assert_close(EmbeddingXGradient(net, net.embed).attribute(ids, target), expected)


def test_embedding_x_gradient_language_model_by_hand():
    torch.manual_seed(9)
    net = CausalMeanLM().double()
    ids = torch.randint(0, 11, (2, 6))
    explainer = EmbeddingXGradient(net, "embed")
    target = torch.tensor([3, 7])
    e, w = net.embed(ids).detach(), net.unembed.weight.detach()
    per_token = (e * w[target][:, None, :]).sum(-1)  # (B, T)
    torch.testing.assert_close(explainer.attribute(ids, target), per_token / 6)  # last position: mean of all
    at = explainer.attribute(ids, target, position=torch.tensor([2, -3]))  # positions 2 and 3
    expected = torch.stack([per_token[0] / 3 * (torch.arange(6) <= 2), per_token[1] / 4 * (torch.arange(6) <= 3)])
    torch.testing.assert_close(at, expected)


# --------------------------------------------------------------------------------------------------------------
# Targets, maps, hygiene
# --------------------------------------------------------------------------------------------------------------


def test_resolve_targets_rules_and_default():
    teacher = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    student = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 1.0]])
    assert DEFAULT_TARGET == "teacher"
    assert resolve_targets(teacher_logits=teacher, student_logits=student).tolist() == [1, 0]
    assert resolve_targets("student", student_logits=student).tolist() == [2, 0]
    assert resolve_targets("label", labels=torch.tensor([2, 1])).tolist() == [2, 1]


def test_spatial_map_kinds():
    a = torch.tensor([[[[1.0, -2.0]], [[-3.0, 1.0]]]])  # (1, 2, 1, 2)
    assert spatial_map(a).tolist() == [[[4.0, 3.0]]]
    assert spatial_map(a, "sum").tolist() == [[[-2.0, -1.0]]]
    assert spatial_map(a[:, 0]) is not None and spatial_map(a[:, 0]).shape == (1, 1, 2)


EXPLAINERS = {
    "gradcam": lambda net: GradCAM(net, "block3"),
    "gradcam++": lambda net: GradCAMPlusPlus(net, "block2"),
    "input_x_gradient": InputXGradient,
    "integrated_gradients": lambda net: IntegratedGradients(net, n_steps=3, internal_batch_size=4),
}


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_hooks_removed_modes_restored_no_grad_left(name):
    net = cnn()
    net.block2.eval()  # a mixed state must come back as it was
    modes = {n: m.training for n, m in net.named_modules()}
    with torch.no_grad():  # the caller's grad mode is kept too
        EXPLAINERS[name](net).attribute(images(), TARGET)
        assert not torch.is_grad_enabled()
    assert {n: m.training for n, m in net.named_modules()} == modes
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert all(p.grad is None for p in net.parameters())


def test_embedding_hygiene_and_hooks_removed_on_error():
    net = CausalMeanLM().train()
    EmbeddingXGradient(net, "embed").attribute(torch.randint(0, 11, (2, 4)), 1)
    assert net.training and all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError):
        EmbeddingXGradient(net, "embed").attribute(torch.randint(0, 11, (2, 4)), 99)
    assert all(not m._forward_hooks for m in net.modules()) and net.training


def test_results_are_float32_for_half_precision_models():
    net = nn.Sequential(nn.Linear(4, 3)).to(torch.bfloat16)
    assert InputXGradient(net).attribute(torch.ones(2, 4, dtype=torch.bfloat16), 0).dtype == torch.float32


# --------------------------------------------------------------------------------------------------------------
# Bad inputs: one test each
# --------------------------------------------------------------------------------------------------------------


def test_target_out_of_range_names_the_number_of_classes():
    with pytest.raises(ValueError, match=r"the model has 5 classes"):
        GradCAM(cnn(), "block3").attribute(images(), 5)


def test_target_batch_mismatch():
    with pytest.raises(ValueError, match=r"one class index per example: an int or shape \(6,\)"):
        InputXGradient(cnn()).attribute(images(), torch.tensor([0, 1]))


def test_target_as_a_rule_string_points_to_resolve_targets():
    with pytest.raises(TypeError, match="resolve_targets"):
        GradCAM(cnn(), "block3").attribute(images(), "teacher")


def test_float_targets_are_refused():
    with pytest.raises(TypeError, match="integer class indices"):
        InputXGradient(cnn()).attribute(images(), torch.zeros(6))


@pytest.mark.parametrize("make", [InputXGradient, IntegratedGradients])
def test_non_float_inputs_for_gradient_methods(make):
    with pytest.raises(TypeError, match="floating-point"):
        make(mlp()).attribute(torch.ones(2, 6, dtype=torch.long), 0)


def test_unknown_layer_lists_close_names():
    with pytest.raises(KeyError, match="block3"):
        GradCAM(cnn(), "blok3")


def test_layer_outside_the_model():
    with pytest.raises(ValueError, match="submodule"):
        GradCAM(cnn(), nn.Conv2d(1, 1, 1))


def test_layer_that_never_runs():
    net = cnn()
    net.spare = nn.Conv2d(8, 8, 1).double()
    with pytest.raises(ValueError, match="never ran"):
        GradCAM(net, "spare").attribute(images(), 0)


def test_layer_the_logits_do_not_depend_on():
    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.side, self.head = nn.Conv2d(2, 2, 1), nn.Linear(2, 3)

        def forward(self, x):
            self.side(x)
            return self.head(x.mean((2, 3)))

    with pytest.raises(ValueError, match="do not depend on"):
        GradCAM(Detached(), "side").attribute(torch.randn(2, 2, 3, 3), 0)


def test_layer_reused_in_one_pass():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(2, 2, 1), nn.Linear(2, 3)

        def forward(self, x):
            return self.head(self.conv(self.conv(x)).mean((2, 3)))

    with pytest.raises(ValueError, match="ran 2 times"):
        GradCAM(Twice(), "conv").attribute(torch.randn(2, 2, 3, 3), 0)


@pytest.mark.parametrize(("n_steps", "method"), [(0, "gausslegendre"), (1, "riemann_trapezoid"), (2.5, "riemann_left")])
def test_too_few_steps(n_steps, method):
    with pytest.raises(ValueError, match="n_steps"):
        IntegratedGradients(mlp(), n_steps=n_steps, method=method)


def test_unknown_ig_method():
    with pytest.raises(ValueError, match="gausslegendre"):
        IntegratedGradients(mlp(), method="simpson")


def test_bad_internal_batch_size():
    with pytest.raises(ValueError, match="internal_batch_size"):
        IntegratedGradients(mlp(), internal_batch_size=0)


def test_baselines_of_the_wrong_shape():
    with pytest.raises(ValueError, match="broadcastable"):
        IntegratedGradients(mlp()).attribute(torch.randn(2, 6, dtype=torch.float64), 0, baselines=torch.zeros(2, 5))


def test_non_callable_reshape():
    with pytest.raises(TypeError, match="reshape"):
        GradCAM(vit_like(), "block", reshape=(2, 2))


def test_model_that_is_not_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        InputXGradient(lambda x: x)


def test_model_output_that_is_not_logits():
    with pytest.raises(ValueError, match="logits"):
        InputXGradient(nn.Identity()).attribute(torch.randn(2, 3, 4), 0)


def test_position_out_of_range():
    with pytest.raises(ValueError, match="the sequences have 4 tokens"):
        EmbeddingXGradient(CausalMeanLM(), "embed").attribute(torch.randint(0, 11, (2, 4)), 1, position=4)


def test_token_target_outside_the_vocabulary():
    with pytest.raises(ValueError, match="11 tokens in its vocabulary"):
        EmbeddingXGradient(CausalMeanLM(), "embed").attribute(torch.randint(0, 11, (2, 4)), 11)


def test_resolve_targets_needs_the_logits_its_rule_reads():
    with pytest.raises(ValueError, match="teacher_logits"):
        resolve_targets("teacher", student_logits=torch.randn(2, 3))
    with pytest.raises(ValueError, match="'teacher', 'label', 'student'"):
        resolve_targets("teachers", teacher_logits=torch.randn(2, 3))


def test_negative_labels_are_refused():
    with pytest.raises(ValueError, match=r"non-negative class indices, but got values in \[-100, 2\]"):
        resolve_targets("label", labels=torch.tensor([2, -100]))


@pytest.mark.parametrize(("x", "error"), [(torch.ones(2, 3, 8, 8, dtype=torch.long), TypeError),
                                          (torch.rand(2, 2, 8, 8, dtype=torch.float64), ValueError)])
def test_inputs_the_model_refuses_chain_its_error(x, error):
    with pytest.raises(error, match=r"Expected `inputs` to be .*which the model refused \(RuntimeError: ") as info:
        GradCAM(cnn(), "block3").attribute(x, 0)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_gradcam_takes_integer_inputs_the_model_takes():
    """Only the model decides what it takes: token ids into a convolutional text model are fine for Grad-CAM."""

    class TokenCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.conv, self.head = nn.Embedding(11, 4), nn.Conv2d(4, 3, 1), nn.Linear(3, 2)

        def forward(self, ids):  # (B, T) -> (B, D, T, 1) -> (B, 3, T, 1) -> (B, 2)
            return self.head(self.conv(self.embed(ids).transpose(1, 2)[..., None]).mean((2, 3)))

    torch.manual_seed(10)
    assert GradCAM(TokenCNN(), "conv").attribute(torch.randint(0, 11, (2, 5)), 1).shape == (2, 5, 1)


def test_token_ids_of_the_wrong_dtype_or_range_leave_no_hook():
    net = CausalMeanLM()
    with pytest.raises(TypeError, match="integer token ids"):
        EmbeddingXGradient(net, "embed").attribute(torch.ones(2, 4, dtype=torch.int16), 1)
    with pytest.raises(ValueError, match=r"token ids in \[0, 10\] \(embedding layer 'embed' has 11 rows\)"):
        EmbeddingXGradient(net, "embed").attribute(torch.tensor([[0, 3, -1]]), 1)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_spatial_map_bad_kind_and_shape():
    with pytest.raises(ValueError, match="abs_sum"):
        spatial_map(torch.zeros(1, 2, 3, 3), kind="max")
    with pytest.raises(ValueError, match="4-D"):
        spatial_map(torch.zeros(2, 5))


def test_inference_mode_is_refused():
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        InputXGradient(mlp()).attribute(torch.randn(2, 6, dtype=torch.float64), 0)
