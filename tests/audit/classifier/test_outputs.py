"""The outputs and representations stages on a tiny lab: files written, figures equal to direct measure calls,
reliability counts coherent, CKA of the teacher with itself ~1, cached on a second call, bad inputs rejected early."""

import json

import pytest
import torch
from torch import nn

import kdlens.probes.outputs as outputs
from kdlens import measures as M
from kdlens.audit.classifier import outputs as outputs_stages
from kdlens.audit.classifier import representations as representations_stages
from kdlens.io import read_json
from kdlens.lab import vision
from kdlens.lab.cnn import SmallCNN
from kdlens.tasks.files import EvalSplit
from kdlens.tasks.shapes import make_split
from tests.audit.classifier import run_alone
from tests.lab.test_vision import tiny

LAYERS = ["block1", "block2", "block3", "embed"]


outputs_stage = run_alone(outputs_stages.outputs_stage)  # (run_dir, *args) -> the stage's summary
representations_stage = run_alone(representations_stages.representations_stage)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    lab = vision.build(tmp_path_factory.mktemp("labs"), tiny(students=["labels_only", "output_kd"]), progress=False)
    splits = {}
    for split in ("test", "test_shifted"):
        data = make_split(lab.config.shapes, split, 96)
        splits[split] = EvalSplit(data.images, data.labels)
    students = {name: lab.student(name) for name in lab.student_dirs}
    return lab.teacher(), students, splits


@pytest.fixture(scope="module")
def ran(setup, tmp_path_factory):
    teacher, students, splits = setup
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, outputs_stage(run_dir, teacher, students, splits)


def _logits(model, inputs):
    with torch.no_grad():
        return model.eval()(inputs).float()


def test_outputs_stage_figures_match_the_measures(setup, ran):
    teacher, students, splits = setup
    run_dir, summary = ran
    folder = run_dir / "stages" / "outputs"
    figures = read_json(folder / "figures.json")
    assert figures["models"] == ["teacher", *students] and set(figures["splits"]) == set(splits)
    for split, data in splits.items():
        t = _logits(teacher, data.inputs)
        entries = figures["splits"][split]["models"]
        assert entries["teacher"]["accuracy"] == pytest.approx(float((t.argmax(-1) == data.labels).double().mean()))
        assert "agreement" not in entries["teacher"]
        for name, student in students.items():
            s = _logits(student, data.inputs)
            entry = entries[name]
            probs = s.double().softmax(-1)
            assert entry["accuracy"] == pytest.approx(float((s.argmax(-1) == data.labels).double().mean()))
            assert entry["agreement"] == pytest.approx(M.agreement(t, s))
            assert entry["kl"] == pytest.approx(M.kl_divergence(t, s), rel=1e-5)
            assert entry["ece"] == pytest.approx(M.expected_calibration_error(probs, data.labels), abs=1e-6)
            assert entry["mce"] >= entry["ece"] and 0 <= entry["js"] <= 0.7
            assert entry["temperature"] > 0 and "temperature_at_bound" in entry
            curve = entry["reliability"]
            assert sum(curve["count"]) == len(data.labels) == 96
            assert len(curve["confidence"]) == len(curve["accuracy"]) == 15 and len(curve["edges"]) == 16
            assert summary[name][split] == {k: entry[k] for k in ("accuracy", "agreement", "kl", "ece")}
    rows = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 96 * 2 * (1 + len(students))
    kd = [r for r in rows if r["model"] == "output_kd" and r["split"] == "test"]
    assert sum(r["kl"] for r in kd) / 96 == pytest.approx(figures["splits"]["test"]["models"]["output_kd"]["kl"])
    assert sum(r["agree"] for r in kd) / 96 == pytest.approx(summary["output_kd"]["test"]["agreement"])
    assert all(r["correct"] == (r["prediction"] == r["label"]) for r in rows)


def test_outputs_stage_is_cached(setup, ran, monkeypatch):
    teacher, students, splits = setup
    run_dir, first = ran

    def recomputed(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(outputs, "calibration", recomputed)
    again = outputs_stage(run_dir, teacher, students, splits)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}
    with pytest.raises(AssertionError, match="recomputed"):
        outputs_stage(run_dir, teacher, students, splits, n_bins=10)


def test_cka_of_the_teacher_with_itself(setup, tmp_path, monkeypatch):
    teacher, students, splits = setup
    student_layers = {"self": LAYERS, "output_kd": ["block2", "block3"]}
    summary = representations_stage(tmp_path, teacher, {"self": teacher, "output_kd": students["output_kd"]},
                                    splits["test"], LAYERS, student_layers)
    figures = read_json(tmp_path / "stages" / "representations" / "figures.json")
    own = figures["students"]["self"]
    assert figures["teacher_layers"] == LAYERS and own["student_layers"] == LAYERS
    cka = torch.tensor(own["cka"])
    assert cka.shape == (4, 4) and torch.allclose(cka.diagonal(), torch.ones(4, dtype=cka.dtype), atol=1e-6)
    assert own["cka_mean_best"] == pytest.approx(1.0, abs=1e-6) == summary["self"]["cka_mean_best"]
    assert own["best_teacher_layer"]["block2"] == "block2"
    kd = figures["students"]["output_kd"]
    assert torch.tensor(kd["cka"]).shape == (4, 2) and 0 <= kd["cka_mean_best"] <= 1 + 1e-9
    assert set(kd["best_teacher_layer"].values()) <= set(LAYERS)
    monkeypatch.setattr(representations_stages, "layer_features",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = representations_stage(tmp_path, teacher, {"self": teacher, "output_kd": students["output_kd"]},
                                  splits["test"], LAYERS, student_layers)
    assert again["self"] == summary["self"]


def test_bad_inputs_are_rejected_before_computing(setup, tmp_path, monkeypatch):
    teacher, _, splits = setup
    monkeypatch.setattr(outputs, "calibration", lambda *a, **k: (_ for _ in ()).throw(AssertionError("computed")))
    monkeypatch.setattr(representations_stages, "layer_features",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("computed")))
    wide = SmallCNN(n_classes=7, widths=(2, 4, 4))
    with pytest.raises(ValueError, match=r"teacher's 4 classes, but got 7"):
        outputs_stage(tmp_path, teacher, {"wide": wide}, splits)
    with pytest.raises(ValueError, match=r"teacher's 4 classes, but got 7"):
        representations_stage(tmp_path, teacher, {"wide": wide}, splits["test"], LAYERS, {"wide": ["block3"]})
    with pytest.raises(KeyError, match=r"Did you mean 'block3'"):
        representations_stage(tmp_path, teacher, {"self": teacher}, splits["test"], ["blok3"], {"self": ["block3"]})
    empty = EvalSplit(splits["test"].inputs[:0], splits["test"].labels[:0])
    with pytest.raises(ValueError, match="at least one example"):
        outputs_stage(tmp_path, teacher, {}, {"test": empty})
    broken = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    with torch.no_grad():
        broken[1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"model 'broken' to give finite logits"):
        outputs_stage(tmp_path, teacher, {"broken": broken}, splits)
