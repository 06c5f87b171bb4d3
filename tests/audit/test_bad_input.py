"""One test per bad input to ``kdlens.audit.run``: each a clear error before any stage runs."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from kdlens import audit
from kdlens.lab.cnn import SmallCNN
from kdlens.subjects import save_classifier


def tiny_cnn(n_classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(n_classes=n_classes, widths=(2, 4, 4))


@pytest.fixture
def data_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "test.safetensors"
    save_file({"inputs": torch.rand(20, 3, 16, 16, generator=g), "labels": torch.randint(0, 3, (20,), generator=g)},
              str(path))
    return path


@pytest.fixture
def checkpoints(tmp_path):
    kwargs = {"n_classes": 3, "widths": [2, 4, 4]}
    return {"teacher": save_classifier(tiny_cnn(), tmp_path / "teacher", kwargs),
            "student": save_classifier(tiny_cnn(seed=1), tmp_path / "student", kwargs)}


def config(tmp_path, data_file, checkpoints, **overrides) -> dict:
    base = {"run_dir": str(tmp_path / "run"), "data": {"task": "tensors", "splits": {"test": str(data_file)}},
            "teacher": {"checkpoint": str(checkpoints["teacher"])},
            "students": {"small": {"checkpoint": str(checkpoints["student"])}},
            "probes": {"robustness": {"steps": 1, "epsilons": []}}}
    base.update(overrides)
    return base


def no_stage_ran(tmp_path) -> bool:
    return not (tmp_path / "run" / "manifest.json").exists()


def test_the_good_config_runs(tmp_path, data_file, checkpoints):
    results = audit.run(config(tmp_path, data_file, checkpoints), progress=False)
    assert results["students"]["small"]["accuracy"] is not None
    assert results["students"]["small"]["evidence_mass"] is None  # no masks in this data
    assert results["students"]["small"]["right_for_wrong_reasons"] is None  # no baseline, no thresholds


def test_a_config_typo_suggests_the_key(tmp_path, data_file, checkpoints):
    bad = config(tmp_path, data_file, checkpoints)
    bad["studnets"] = bad.pop("students")
    with pytest.raises(ValueError, match="unknown key 'studnets'.*Did you mean 'students'"):
        audit.run(bad, progress=False)


def test_a_nested_typo_suggests_the_key(tmp_path, data_file, checkpoints):
    bad = config(tmp_path, data_file, checkpoints, probes={"robustness": {"epsilom": 0.01}})
    with pytest.raises(ValueError, match="Did you mean 'epsilon'"):
        audit.run(bad, progress=False)


def test_an_unknown_metric_in_the_selection_rule(tmp_path, data_file, checkpoints):
    bad = config(tmp_path, data_file, checkpoints, selection={"weights": {"acuracy": 1.0}})
    with pytest.raises(ValueError, match="unknown metric 'acuracy'.*Did you mean 'accuracy'"):
        audit.run(bad, progress=False)


def test_a_missing_checkpoint(tmp_path, data_file, checkpoints):
    bad = config(tmp_path, data_file, checkpoints, students={"small": {"checkpoint": str(tmp_path / "nope")}})
    with pytest.raises(FileNotFoundError, match="model 'small'.*nope"):
        audit.run(bad, progress=False)
    assert no_stage_ran(tmp_path)


def test_a_missing_weights_file(tmp_path, data_file, checkpoints):
    bad = config(tmp_path, data_file, checkpoints, students={"small": {
        "architecture": "kdlens.lab.cnn:SmallCNN", "kwargs": {"n_classes": 3}, "weights": str(tmp_path / "w.st")}})
    with pytest.raises(FileNotFoundError, match="weights of model 'small'"):
        audit.run(bad, progress=False)


def test_a_missing_data_file(tmp_path, data_file, checkpoints):
    bad = config(tmp_path, data_file, checkpoints, data={"task": "tensors", "splits": {"test": "nope.safetensors"}})
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        audit.run(bad, progress=False)


def test_an_unknown_lab_model_before_any_training(tmp_path, data_file, checkpoints):
    bad = config(tmp_path, data_file, checkpoints, students={
        "x": {"lab": "vision", "lab_root": str(tmp_path / "labs"), "lab_model": "output_kdd"}})
    with pytest.raises(ValueError, match="Did you mean 'output_kd'"):
        audit.run(bad, progress=False)
    assert not (tmp_path / "labs").exists()


def test_a_wrong_layer_name_lists_the_real_ones(tmp_path, data_file, checkpoints):
    bad = config(tmp_path, data_file, checkpoints, layers={"small": {"attribution": "block4"}})
    with pytest.raises(KeyError, match=r"layer of small \(block1, .*but got 'block4'. Did you mean 'block3'"):
        audit.run(bad, progress=False)
    assert no_stage_ran(tmp_path)


def test_layers_for_a_model_that_is_not_in_the_audit(tmp_path, data_file, checkpoints):
    bad = config(tmp_path, data_file, checkpoints, layers={"smal": {"attribution": "block3"}})
    with pytest.raises(ValueError, match="smal"):
        audit.run(bad, progress=False)


def test_a_student_with_another_class_count(tmp_path, data_file, checkpoints):
    save_classifier(tiny_cnn(n_classes=5), tmp_path / "five", {"n_classes": 5, "widths": [2, 4, 4]})
    bad = config(tmp_path, data_file, checkpoints, students={"five": {"checkpoint": str(tmp_path / "five")}})
    with pytest.raises(ValueError, match="teacher's 3 classes, but got 5"):
        audit.run(bad, progress=False)
    assert no_stage_ran(tmp_path)


def test_an_empty_split(tmp_path, checkpoints):
    empty = tmp_path / "empty.safetensors"
    save_file({"inputs": torch.zeros(0, 3, 16, 16), "labels": torch.zeros(0, dtype=torch.long)}, str(empty))
    with pytest.raises(ValueError, match="at least one|0"):
        audit.run(config(tmp_path, empty, checkpoints), progress=False)
    assert no_stage_ran(tmp_path)


def test_labels_outside_the_models_classes(tmp_path, checkpoints):
    path = tmp_path / "seven.safetensors"
    save_file({"inputs": torch.rand(8, 3, 16, 16), "labels": torch.full((8,), 6)}, str(path))
    with pytest.raises(ValueError, match=r"lie in \[0, 2\]"):
        audit.run(config(tmp_path, path, checkpoints), progress=False)


def test_nan_outputs(tmp_path, data_file, checkpoints):
    broken = tiny_cnn(seed=2)
    with torch.no_grad():
        broken.head.bias.fill_(float("nan"))
    save_classifier(broken, tmp_path / "nan", {"n_classes": 3, "widths": [2, 4, 4]})
    bad = config(tmp_path, data_file, checkpoints, students={"nan": {"checkpoint": str(tmp_path / "nan")}})
    with pytest.raises(ValueError, match="'nan' to give finite logits"):
        audit.run(bad, progress=False)
    assert no_stage_ran(tmp_path)


def test_no_student(tmp_path, data_file, checkpoints):
    with pytest.raises(ValueError, match="at least one student"):
        audit.run(config(tmp_path, data_file, checkpoints, students={}), progress=False)


def test_a_student_named_teacher(tmp_path, data_file, checkpoints):
    bad = config(tmp_path, data_file, checkpoints, students={"teacher": {"checkpoint": str(checkpoints["student"])}})
    with pytest.raises(ValueError, match="'teacher' names the teacher"):
        audit.run(bad, progress=False)


def test_a_model_without_a_spatial_layer_needs_attribution_named_or_off(tmp_path, checkpoints):
    path = tmp_path / "flat.safetensors"
    save_file({"inputs": torch.rand(8, 6), "labels": torch.randint(0, 3, (8,))}, str(path))
    torch.manual_seed(0)
    flat = {"teacher": nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))}
    bad = config(tmp_path, path, checkpoints, teacher=None, students={})
    with pytest.raises(ValueError, match="spatial.*enabled: false"):
        audit.run(bad, teacher=flat["teacher"], students={"copy": flat["teacher"]}, progress=False)
    bad["probes"] = {"attribution": {"enabled": False}, "robustness": {"steps": 1, "epsilons": []}}
    results = audit.run(bad, teacher=flat["teacher"], students={"copy": flat["teacher"]}, progress=False)
    assert results["students"]["copy"]["agreement"] == 1.0 and results["students"]["copy"]["kl"] == 0.0
    assert results["students"]["copy"]["attribution_spearman"] is None


def test_a_failing_stage_keeps_the_stages_before_it(tmp_path, data_file, checkpoints, monkeypatch):
    from kdlens.audit.classifier import kind as run_module

    def broken(*args, **kwargs):
        raise RuntimeError("attack failed")

    monkeypatch.setattr(run_module, "robustness_stage", broken)
    with pytest.raises(RuntimeError, match="attack failed"):
        audit.run(config(tmp_path, data_file, checkpoints), progress=False)
    stages = tmp_path / "run" / "stages"
    for stage in ("outputs", "representations", "attribution"):
        assert (stages / stage / "figures.json").is_file(), stage
