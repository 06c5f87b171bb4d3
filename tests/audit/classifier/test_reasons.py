"""The reasons stages end to end on a tiny lab: files written, figures coherent, cached on a second call."""

import json

import pytest
import torch

from kdlens.audit.classifier import attribution as attribution_stages
from kdlens.audit.classifier import robustness as robustness_stages
from kdlens.io import read_json
from kdlens.lab import vision
from kdlens.probes.consistency import VERDICTS
from kdlens.tasks.files import EvalSplit
from kdlens.tasks.shapes import make_split, other_cues, with_cues
from tests.audit.classifier import run_alone
from tests.lab.test_vision import tiny

attribution_stage = run_alone(attribution_stages.attribution_stage)  # (run_dir, *args) -> the stage's summary
robustness_stage = run_alone(robustness_stages.robustness_stage)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("labs")
    lab = vision.build(root, tiny(students=["labels_only", "output_kd"]), progress=False, baseline_teacher=True)
    test = make_split(lab.config.shapes, "test", 96)
    edited = other_cues(test, seed=1)
    data = EvalSplit(test.images, test.labels, test.masks, test.difficulty, with_cues(test, edited).images, edited)
    students = {name: lab.student(name) for name in lab.student_dirs}
    baselines = {"teacher_reseeded": lab.baseline_teacher(), "untrained_student": lab.untrained_student()}
    layers = dict.fromkeys(["teacher", *students, *baselines], "block3")
    return lab, data, students, baselines, layers


def test_attribution_stage_writes_figures_tables_and_maps(setup, tmp_path):
    lab, data, students, baselines, layers = setup
    summary = attribution_stage(tmp_path, lab.teacher(), students, data, layers, baselines, keep_maps=8)
    folder = tmp_path / "stages" / "attribution"
    figures = read_json(folder / "figures.json")
    assert set(figures["models"]) == {"teacher", *students, *baselines}
    assert {"agreement_threshold", "evidence_threshold", "quantile"} <= set(figures["thresholds"])
    entry = figures["models"]["output_kd"]
    assert -1 <= entry["spearman"]["mean"] <= 1 and entry["spearman"]["low"] <= entry["spearman"]["mean"]
    assert sum(entry["verdicts"]["overall"].values()) == pytest.approx(1.0)
    for model in ("teacher", "output_kd", "untrained_student"):
        for key in ("stability", "stability_adversarial"):
            assert -1 <= figures["models"][model][key]["mean"] <= 1, (model, key)
    assert len(entry["verdicts"]["by_difficulty"]) == 4
    rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 96 * (len(students) + len(baselines))
    assert {row["verdict"] for row in rows} <= set(VERDICTS)
    from kdlens.io import load_tensors

    maps = load_tensors(folder / "arrays.safetensors")
    assert maps["maps.teacher"].shape == (8, 4, 4)  # block3 of a 16 x 16 input
    assert summary["output_kd"]["spearman"] == entry["spearman"]["mean"]
    # the accuracy in the figures is the model's own
    with torch.no_grad():
        accuracy = float((lab.student("output_kd").eval()(data.inputs).argmax(-1) == data.labels).double().mean())
    assert entry["accuracy"] == pytest.approx(accuracy)


def test_stages_are_cached_and_recomputed_when_inputs_change(setup, tmp_path, monkeypatch):
    lab, data, students, baselines, layers = setup
    first = attribution_stage(tmp_path, lab.teacher(), students, data, layers, baselines)
    monkeypatch.setattr(attribution_stages, "example_consistency",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert attribution_stage(tmp_path, lab.teacher(), students, data, layers, baselines) == first
    with pytest.raises(AssertionError, match="recomputed"):
        attribution_stage(tmp_path, lab.teacher(), students, data, layers, baselines, top_k=0.3)


def test_robustness_stage_attacks_every_student_and_flips_cues(setup, tmp_path):
    lab, data, students, _, _ = setup
    summary = robustness_stage(tmp_path, lab.teacher(), students, data, epsilon=8 / 255, steps=3)
    figures = read_json(tmp_path / "stages" / "robustness" / "figures.json")
    assert figures["epsilon"] == pytest.approx(8 / 255) and set(figures["models"]) == set(students)
    for name in students:
        entry = figures["models"][name]
        assert {"student_correct", "agree_on_student_attack", "agree_on_teacher_attack", "student_only_flips",
                "student_follows_cue"} <= set(entry)
        assert 0 <= summary[name]["cue_flips"] <= 1


def test_a_missing_layer_is_named(setup, tmp_path):
    lab, data, students, baselines, layers = setup
    with pytest.raises(ValueError, match=r"none for \['untrained_student'\]"):
        attribution_stage(tmp_path, lab.teacher(), students, data,
                          {k: v for k, v in layers.items() if k != "untrained_student"}, baselines)


def test_data_without_masks_or_counterfactuals_still_gives_comparisons_and_verdicts(setup, tmp_path):
    lab, data, students, baselines, layers = setup
    plain = EvalSplit(data.inputs, data.labels)
    attribution_stage(tmp_path, lab.teacher(), students, plain, layers, baselines)
    figures = read_json(tmp_path / "stages" / "attribution" / "figures.json")
    assert set(figures["thresholds"]) == {"agreement_threshold", "quantile"}
    entry = figures["models"]["output_kd"]
    assert "evidence" not in entry and "by_difficulty" not in entry["verdicts"]
    robustness_stage(tmp_path, lab.teacher(), students, plain, steps=2)
    robust = read_json(tmp_path / "stages" / "robustness" / "figures.json")["models"]["output_kd"]
    assert "student_only_flips" not in robust and "agree_on_student_attack" in robust
