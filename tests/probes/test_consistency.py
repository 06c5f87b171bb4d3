"""Verdicts, thresholds and map comparisons of the consistency probe, on hand-made maps; its per-example part on
some rows of a split, against the whole split."""

import math

import pytest
import torch

from kdlens.lab.cnn import SmallCNN
from kdlens.probes.consistency import (
    VERDICTS,
    attribution_consistency,
    baseline_thresholds,
    choose_thresholds,
    compare_maps,
    example_consistency,
    verdict_rates,
    verdicts,
)
from kdlens.probes.robustness import uniform_noise

RIGHT, SHORTCUT, WRONG = VERDICTS


def test_verdicts_combine_correctness_agreement_and_evidence():
    correct = torch.tensor([True, True, True, True, False])
    agreement = torch.tensor([0.9, 0.2, 0.9, math.nan, 0.9])
    evidence = torch.tensor([0.8, 0.8, 0.1, 0.8, 0.8])
    assert verdicts(correct, agreement, 0.5) == [RIGHT, SHORTCUT, RIGHT, SHORTCUT, WRONG]
    assert verdicts(correct, agreement, 0.5, evidence, 0.5) == [RIGHT, SHORTCUT, SHORTCUT, SHORTCUT, WRONG]


def test_thresholds_are_the_baselines_quantiles():
    reseeded = torch.arange(101, dtype=torch.float64) / 100  # 0.00 .. 1.00
    evidence = torch.cat([torch.linspace(0.5, 1.0, 11), torch.tensor([math.nan])])
    out = baseline_thresholds(reseeded, evidence, quantile=0.1)
    assert out == pytest.approx({"agreement_threshold": 0.1, "evidence_threshold": 0.55, "quantile": 0.1})


def test_verdict_rates_overall_and_by_difficulty():
    labels = [RIGHT, RIGHT, SHORTCUT, WRONG, RIGHT, WRONG, WRONG, WRONG]
    difficulty = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    rates = verdict_rates(labels, difficulty, bins=2)
    assert rates["overall"] == {RIGHT: 3 / 8, SHORTCUT: 1 / 8, WRONG: 4 / 8}
    easy, hard = rates["by_difficulty"]
    assert (easy["n"], easy["low"], easy["high"]) == (4, pytest.approx(0.1), pytest.approx(0.4))
    assert easy[RIGHT] == 0.5 and hard[WRONG] == 0.75


def test_compare_maps_of_identical_maps_and_evidence():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 8, 8, generator=g, dtype=torch.float64)
    masks = torch.zeros(6, 16, 16, dtype=torch.bool)
    masks[:, 4:12, 4:12] = True
    out = compare_maps(maps, maps.clone(), masks)
    for key in ("spearman", "iou_top20", "cosine"):
        torch.testing.assert_close(out[key], torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(out["teacher_evidence"], out["student_evidence"])
    torch.testing.assert_close(out["mask_fraction"], torch.full((6,), 0.25, dtype=torch.float64))
    inside = torch.zeros(6, 8, 8, dtype=torch.float64)
    inside[:, 3, 3] = 1.0  # all mass in one coarse cell, inside the mask once upsampled
    assert float(compare_maps(maps, inside, masks)["student_evidence"].min()) > 0.9


def test_compare_maps_across_resolutions():
    g = torch.Generator().manual_seed(1)
    out = compare_maps(torch.rand(3, 8, 8, generator=g), torch.rand(3, 4, 4, generator=g))
    assert out["spearman"].shape == (3,)


@pytest.mark.parametrize("call, message", [
    (lambda: verdicts(torch.ones(3, dtype=torch.bool), torch.ones(2), 0.5), "the same number of examples"),
    (lambda: verdicts(torch.ones(2, dtype=torch.bool), torch.ones(2), 0.5, torch.ones(2)),
     "Expected `evidence_threshold` to be a number"),
    (lambda: verdicts(torch.ones(2, dtype=torch.bool), torch.ones(2), math.nan), "agreement_threshold"),
    (lambda: baseline_thresholds(torch.ones(4), quantile=1.5), "Expected `quantile` to be in"),
    (lambda: baseline_thresholds(torch.full((4,), math.nan)), "at least one defined"),
    (lambda: verdict_rates([RIGHT, WRONG], torch.ones(3)), "one value per example"),
    (lambda: verdict_rates([]), "at least one verdict"),
])
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_example_consistency_on_some_rows_is_those_rows_of_the_whole_split():
    def cnn(seed):
        torch.manual_seed(seed)
        return SmallCNN(3, (8, 8, 8)).eval()

    models = {"teacher": cnn(0), "student": cnn(1), "teacher_reseeded": cnn(2)}
    layers = dict.fromkeys(models, "block3")
    g = torch.Generator().manual_seed(0)
    x, y = 0.2 + 0.6 * torch.rand(14, 3, 16, 16, generator=g), torch.randint(0, 3, (14,), generator=g)
    x[0, :, :4], x[1, :, :4] = 0.0, 1.0  # the split's range is (0, 1), that of rows 4-14 (0.2, 0.8)
    masks = torch.rand(14, 16, 16, generator=g) > 0.5
    whole = attribution_consistency(models, x, y, layers, masks, batch_size=4, seed=7)
    assert whole.thresholds == choose_thresholds(whole.compared) and "evidence_threshold" in whole.thresholds
    rows = slice(4, 14)  # starts on a batch boundary; its last batch is short
    part = example_consistency(models, x[rows], y[rows], layers, masks[rows], batch_size=4,
                               unit_noise=uniform_noise(x.shape, seed=7)[rows], bounds=(float(x.min()), float(x.max())))
    assert part.thresholds == {}
    assert torch.equal(part.targets, whole.targets[rows])
    for name in models:
        assert torch.equal(part.maps[name], whole.maps[name][rows]), name
        torch.testing.assert_close(part.stability[name], whole.stability[name][rows], rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(part.stability_adversarial[name], whole.stability_adversarial[name][rows], rtol=0,
                                   atol=0, equal_nan=True)
        assert int(whole.stability[name].isnan().sum()) < 2, name  # defined: the equalities say something
    for key, values in whole.compared["student"].items():
        torch.testing.assert_close(part.compared["student"][key], values[rows], rtol=0, atol=0, equal_nan=True)
    assert choose_thresholds({"student": whole.compared["student"]}, thresholds={"agreement_threshold": 0.3}) \
        == {"agreement_threshold": 0.3}
    with pytest.raises(ValueError, match="Expected `unit_noise` to be the inputs' shape"):
        example_consistency(models, x[rows], y[rows], layers, unit_noise=uniform_noise(x.shape))
