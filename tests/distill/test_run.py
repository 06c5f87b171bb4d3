"""A distillation described by one config is reproducible from its seed, whatever the process's RNG state."""

import json

import torch

from kdlens.config import validate
from kdlens.distill.run import DistillRunConfig, run
from kdlens.lab.cnn import SmallCNN
from kdlens.subjects import save_classifier


def config(tmp_path, run_name: str, seed: int = 0) -> DistillRunConfig:
    kwargs = {"n_classes": 3, "widths": [4, 8, 8]}
    teacher_dir = tmp_path / "teacher"
    if not teacher_dir.exists():
        torch.manual_seed(0)
        save_classifier(SmallCNN(**kwargs), teacher_dir, kwargs)
    return validate({
        "run_dir": str(tmp_path / run_name),
        "data": {"shapes": {"image_size": 16, "cue_size": 3, "n_classes": 3}, "n": 96, "eval": {"test": 64}},
        "teacher": {"checkpoint": str(teacher_dir)},
        "student": {"architecture": "kdlens.lab.cnn:SmallCNN", "kwargs": {"n_classes": 3, "widths": [2, 4, 4]}},
        "strategy": "output_kd",
        "train": {"epochs": 1, "batch_size": 32, "progress": False, "seed": seed},
    }, DistillRunConfig)


def test_same_seed_same_student_whatever_the_global_rng(tmp_path):
    torch.manual_seed(1)
    a = run(config(tmp_path, "a"))
    torch.manual_seed(2)
    b = run(config(tmp_path, "b"))
    assert a.history == b.history
    c = run(config(tmp_path, "c", seed=1))
    assert c.history != a.history


def test_run_saves_the_resolved_config(tmp_path):
    result = run(config(tmp_path, "a"))
    saved = (result.run_dir / "config.yaml").read_text()
    assert "teacher_cache_mb" in saved and "label_smoothing" in saved  # defaults filled, the preset written out
    assert json.loads((result.run_dir / "train.json").read_text())["strategy"]["name"] == "output_kd"


def test_the_saved_config_runs_again_as_it_is(tmp_path):
    from kdlens.config import load_yaml

    result = run(config(tmp_path, "a"))
    again = load_yaml(result.run_dir / "config.yaml", DistillRunConfig)
    assert again.strategy_config() == config(tmp_path, "a").strategy_config()


def test_your_own_data_from_safetensors_files(tmp_path):
    import pytest
    from safetensors.torch import save_file

    x = torch.rand(80, 3, 16, 16)
    y = (x[:, 0].mean((1, 2)) > 0.5).long()
    save_file({"inputs": x, "labels": y}, str(tmp_path / "train.safetensors"))
    save_file({"inputs": x[:40], "labels": y[:40]}, str(tmp_path / "val.safetensors"))
    save_file({"images": x}, str(tmp_path / "wrong.safetensors"))
    sections = config(tmp_path, "own").model_dump(mode="json")
    sections["data"] = {"task": "tensors", "train": str(tmp_path / "train.safetensors"),
                        "eval": {"val": str(tmp_path / "val.safetensors")}}
    result = run(validate(sections, DistillRunConfig))
    assert "val/accuracy" in result.final and result.final["step"] == 3

    sections["data"]["train"] = str(tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match=r"with `inputs` and `labels` tensors, but got keys \['images'\]"):
        run(validate({**sections, "run_dir": str(tmp_path / "wrong")}, DistillRunConfig))
    sections["data"]["train"] = str(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        run(validate({**sections, "run_dir": str(tmp_path / "missing")}, DistillRunConfig))


def test_data_sections_are_validated():
    import pytest

    base = {"run_dir": "r", "student": {"architecture": "kdlens.lab.cnn:SmallCNN"}}
    with pytest.raises(ValueError, match="test_shifted"):
        validate({**base, "data": {"split": "test_shift"}}, DistillRunConfig)
    with pytest.raises(ValueError, match="trained on the shapes task"):
        validate({**base, "data": {"task": "tensors", "train": "t.safetensors"}, "teacher": {"lab": "vision"}},
                 DistillRunConfig)
    assert validate(base, DistillRunConfig).data.task == "shapes"


def test_a_teacher_from_a_factory_and_a_safetensors_file(tmp_path):
    import pytest
    from safetensors.torch import save_file

    torch.manual_seed(0)
    teacher = SmallCNN(n_classes=3, widths=[4, 8, 8])
    save_file(teacher.state_dict(), str(tmp_path / "teacher.safetensors"))
    sections = config(tmp_path, "factory").model_dump(mode="json")
    sections["teacher"] = {"architecture": "kdlens.lab.cnn:SmallCNN", "kwargs": {"n_classes": 3, "widths": [4, 8, 8]},
                           "weights": str(tmp_path / "teacher.safetensors")}
    parsed = validate(sections, DistillRunConfig)
    loaded = parsed.teacher.build()
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), teacher.state_dict().values(),
                                                 strict=True))
    assert "test/agreement" in run(parsed).final

    sections["teacher"]["kwargs"]["widths"] = [4, 8, 16]
    with pytest.raises(ValueError, match=r"block3.0.weight of shape \(8, 8, 3, 3\) where the model has"):
        validate(sections, DistillRunConfig).teacher.build()
    sections["teacher"]["weights"] = str(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        validate(sections, DistillRunConfig).teacher.build()
    with pytest.raises(ValueError, match="weights go with architecture"):
        validate({**sections, "teacher": {"checkpoint": "x", "weights": "y"}}, DistillRunConfig)
