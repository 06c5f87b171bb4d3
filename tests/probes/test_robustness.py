"""Adversarial and counterfactual probes on hand-built models whose answers we know."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlens.probes.robustness import (
    adversarial_agreement,
    counterfactual_flips,
    fgsm,
    pgd,
    robustness_curve,
    uniform_noise,
)
from kdlens.tasks.shapes import CUE_COLOURS, ShapesConfig, make_split, other_cues, with_cues


class Linear(nn.Module):
    def __init__(self, d=12, c=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(c, d, generator=g, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


class CueReader(nn.Module):
    """Answers with the class whose cue colour the top-left pixel has: the shortcut, and nothing else."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        corner = x[:, :, 0, 0]  # (B, 3)
        return -self.scale * (corner[:, None, :] - CUE_COLOURS[None, :4]).square().sum(-1)  # (B, 4)


class ShapeOracle(nn.Module):
    """Answers from the evidence alone (a lookup of the true label): the right reason, immune to the cue."""

    def __init__(self, data):
        super().__init__()
        self.data = data
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        index = (x[:, None, :, 8:, 8:] == self.data.images[None, :, :, 8:, 8:]).flatten(2).all(-1).float().argmax(1)
        return self.scale * F.one_hot(self.data.labels[index], 4).float()


def data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 12, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


@torch.no_grad()
def loss(model, x, y):
    return float(F.cross_entropy(model(x), y))


def test_fgsm_steps_along_the_gradient_sign_and_stays_in_bounds():
    model, (x, y) = Linear(), data()
    x.requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)[0]
    x = x.detach()
    adv = fgsm(model, x, y, epsilon=0.05)
    torch.testing.assert_close(adv, (x + 0.05 * grad.sign()).clamp(0, 1))
    assert loss(model, adv, y) > loss(model, x, y)
    assert model.weight.grad is None


def test_pgd_stays_in_the_ball_beats_fgsm_and_is_reproducible():
    model, (x, y) = Linear(), data()
    adv = pgd(model, x, y, epsilon=0.03, steps=20, seed=1)
    assert float((adv - x).abs().max()) <= 0.03 + 1e-12
    assert 0 <= float(adv.min()) and float(adv.max()) <= 1
    assert loss(model, adv, y) >= loss(model, fgsm(model, x, y, 0.03), y) - 1e-9
    assert torch.equal(adv, pgd(model, x, y, epsilon=0.03, steps=20, seed=1))
    assert not torch.equal(adv, pgd(model, x, y, epsilon=0.03, steps=20, seed=2))


def test_attacks_restore_the_model_mode_and_leave_no_gradients():
    model = nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).double().train()
    x, y = data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pgd(model, x, y, epsilon=0.05, steps=3)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched


def test_zero_budget_leaves_predictions_and_agreement_as_they_were():
    teacher, student, (x, y) = Linear(seed=0), Linear(seed=1), data()
    result = adversarial_agreement(teacher, student, x, y, epsilon=0.0, steps=2)
    clean_t, clean_s = teacher(x).argmax(-1), student(x).argmax(-1)
    torch.testing.assert_close(result["clean_agree"], (clean_t == clean_s).float())
    torch.testing.assert_close(result["agree_on_student_attack"], result["clean_agree"])
    torch.testing.assert_close(result["student_correct"], (clean_s == y).float())


def test_an_attack_on_a_model_hurts_it_more_than_its_copy_is_hurt():
    teacher, (x, y) = Linear(seed=0), data(200)
    y = teacher(x).argmax(-1)  # the teacher is right everywhere before the attack
    result = adversarial_agreement(teacher, teacher, x, y, epsilon=0.1, attack="fgsm")
    assert float(result["teacher_correct"].mean()) < 0.9
    assert float(result["agree_on_teacher_attack"].mean()) == 1.0  # a model always agrees with itself


def test_counterfactual_separates_a_cue_reader_from_a_shape_reader():
    shapes = make_split(ShapesConfig(noise=0.0), "test", 64)
    new = other_cues(shapes, seed=0)
    edited = with_cues(shapes, new)
    result = counterfactual_flips(ShapeOracle(shapes), CueReader(), shapes.images, edited.images, edited_to=new)
    assert float(result["teacher_flips"].mean()) == 0.0
    assert float(result["student_only_flips"].mean()) == 1.0
    assert float(result["student_follows_cue"].mean()) == 1.0
    assert float(result["teacher_follows_cue"].mean()) == 0.0


@pytest.mark.parametrize("kwargs, error, message", [
    ({"epsilon": -0.1}, ValueError, "Expected `epsilon` to be a nonnegative L-inf budget"),
    ({"epsilon": float("nan")}, ValueError, "epsilon"),
    ({"epsilon": 0.1, "steps": 0}, ValueError, "Expected `steps` to be a positive integer"),
    ({"epsilon": 0.1, "step_size": -1.0}, ValueError, "step_size"),
    ({"epsilon": 1e30}, ValueError, r"at most the inputs' whole range \(1, bounds 0 to 1\), but got 1e\+30"),
    ({"epsilon": 0.1, "bounds": (1.0, 0.0)}, ValueError, "Expected `bounds` to be a finite .low, high. pair"),
    ({"epsilon": 0.1, "bounds": (0.0, float("inf"))}, ValueError, "Expected `bounds`"),
])
def test_bad_attack_settings(kwargs, error, message):
    model, (x, y) = Linear(), data()
    with pytest.raises(error, match=message):
        pgd(model, x, y, **kwargs)


def test_bad_attack_inputs():
    model, (x, y) = Linear(), data()
    with pytest.raises(ValueError, match="the same number of examples"):
        fgsm(model, x, y[:-1], 0.1)
    with pytest.raises(ValueError, match=r"class indices below 3.*a maximum of 7"):
        fgsm(model, x, torch.full_like(y, 7), 0.1)
    with pytest.raises(TypeError, match="floating-point"):
        fgsm(model, (x * 10).long(), y, 0.1)
    with pytest.raises(ValueError, match="unknown|one of 'fgsm', 'pgd'"):
        adversarial_agreement(model, model, x, y, 0.1, attack="cw")
    with pytest.raises(ValueError, match="the same shape"):
        counterfactual_flips(model, model, x, x[:-1])


def test_inputs_outside_the_bounds_are_refused_not_clipped():
    """Normalised images (here in [-1, 1]) under the default bounds (0, 1) would be clipped before the attack began:
    every number after would be of other inputs."""
    model, (x, y) = Linear(), data()
    normalised = 2 * x - 1
    with pytest.raises(ValueError, match=r"values inside the attack's bounds \[0, 1\].*probes.robustness.bounds"):
        pgd(model, normalised, y, epsilon=0.03)
    adv = pgd(model, normalised, y, epsilon=0.03, steps=5, bounds=(-1, 1))
    assert float((adv - normalised).abs().max()) <= 0.03 + 1e-12 and float(adv.min()) >= -1
    assert float(adv.min()) < 0  # nothing was clipped to 0


def test_pgd_on_some_rows_with_their_start_attacks_them_as_the_whole_split_does():
    model, (x, y) = Linear(), data(n=50)
    whole = pgd(model, x, y, epsilon=0.05, steps=4, seed=3, batch_size=8)
    start = uniform_noise(x.shape, seed=3)  # the default start is this draw for the inputs given
    assert torch.equal(pgd(model, x, y, epsilon=0.05, steps=4, batch_size=8, start=start), whole)
    rows = slice(16, 41)  # two whole batches and a short one
    assert torch.equal(pgd(model, x[rows], y[rows], epsilon=0.05, steps=4, batch_size=8, start=start[rows]),
                       whole[rows])
    assert not torch.equal(pgd(model, x[rows], y[rows], epsilon=0.05, steps=4, seed=3, batch_size=8), whole[rows])


def test_uniform_noise_is_a_prefix_stable_seeded_draw():
    noise = uniform_noise((6, 2, 3), seed=1)
    assert noise.dtype == torch.float32 and float(noise.min()) >= -1 and float(noise.max()) < 1
    assert torch.equal(noise, uniform_noise((6, 2, 3), seed=1)) and not torch.equal(noise, uniform_noise((6, 2, 3)))


@pytest.mark.parametrize("kwargs, message", [
    ({"start": torch.zeros(5, 12)}, r"Expected `start` to be one start per input, the inputs' shape \(48, 12\)"),
    ({"start": torch.full((48, 12), 2.0)}, r"Expected `start` to be values in \[-1, 1\]"),
    ({"start": torch.zeros(48, 12), "random_start": False}, "Expected `start` to be None when random_start"),
    ({"start": torch.zeros(48, 12, dtype=torch.long)}, "Expected `start` to be a floating-point tensor"),
])
def test_a_bad_start_is_refused(kwargs, message):
    model, (x, y) = Linear(), data()
    with pytest.raises((ValueError, TypeError), match=message):
        pgd(model, x, y, epsilon=0.05, steps=2, **kwargs)


def test_the_curve_per_example_averages_to_the_curve_and_shards_by_rows():
    teacher, student, (x, y) = Linear(seed=0), Linear(seed=1), data(n=40)
    args = (teacher, {"s": student}, x, y, [0.05, 0.2])
    mean = robustness_curve(*args, steps=3, batch_size=8)
    per = robustness_curve(*args, steps=3, batch_size=8, reduction="none")
    for kind in ("accuracy", "agreement"):
        for name, values in per[kind].items():
            assert [tuple(v.shape) for v in values] == [(40,), (40,)]
            assert [float(v.double().mean()) for v in values] == mean[kind][name]
    start, rows = uniform_noise(x.shape), slice(8, 40)
    part = robustness_curve(teacher, {"s": student}, x[rows], y[rows], [0.05, 0.2], steps=3, batch_size=8,
                            start=start[rows], reduction="none")
    assert all(torch.equal(a, b[rows]) for a, b in zip(part["agreement"]["s"], per["agreement"]["s"], strict=True))
    with pytest.raises(ValueError, match="reduction"):
        robustness_curve(*args, reduction="sum")
