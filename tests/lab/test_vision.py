"""The vision lab end to end on a tiny recipe: it builds every model, caches them, and resumes after a kill."""

import pytest
import torch

from kdlens import io
from kdlens.config import validate
from kdlens.distill.config import TrainConfig
from kdlens.lab import vision
from kdlens.lab.vision import STUDENTS, CNNSpec, VisionLabConfig, recipe_hash
from kdlens.tasks.shapes import ShapesConfig, make_split


def tiny(**overrides) -> VisionLabConfig:
    one_epoch = TrainConfig(epochs=1, batch_size=64)
    return VisionLabConfig(**{
        "shapes": ShapesConfig(image_size=16, cue_size=3), "n_train": 384, "n_transfer": 256, "n_eval": 128,
        "teacher_model": CNNSpec(widths=(4, 8, 8)), "student_model": CNNSpec(widths=(2, 4, 4), convs_per_block=1),
        "teacher_train": one_epoch, "student_train": one_epoch, **overrides})


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return vision.build(tmp_path_factory.mktemp("labs"), tiny(), progress=False)


def test_builds_a_teacher_and_seven_students_with_their_metrics(lab):
    assert STUDENTS == ("labels_only", "output_kd", "feature_kd", "relation_kd", "attention_kd", "attribution_kd",
                        "multi_objective")
    assert list(lab.metrics) == ["teacher", *STUDENTS]
    assert {"test/accuracy", "test_shifted/accuracy", "seconds"} <= set(lab.metrics["teacher"])
    for name in STUDENTS:
        assert {"test/accuracy", "test_shifted/accuracy", "test/agreement", "test_shifted/agreement"} \
            <= set(lab.metrics[name]), name
        assert all(0 <= lab.metrics[name][k] <= 1 for k in ("test/accuracy", "test_shifted/agreement"))


def test_models_reload_from_safetensors_and_reproduce_the_metrics(lab):
    data = make_split(lab.config.shapes, "test", lab.config.n_eval)
    teacher = lab.teacher().eval()
    for name in ("labels_only", "attribution_kd"):
        student = lab.student(name).eval()
        with torch.no_grad():
            agreement = float((student(data.images).argmax(-1) == teacher(data.images).argmax(-1)).double().mean())
        assert agreement == pytest.approx(lab.metrics[name]["test/agreement"], abs=1e-9)
    assert (lab.teacher_dir / "model.safetensors").is_file()
    assert not list(lab.root.rglob("*.pt")) and not list(lab.root.rglob("*.bin"))


def test_records_the_recipe_and_the_versions(lab):
    manifest = io.read_json(lab.root / "manifest.json")
    assert set(manifest["stages"]) == {"teacher", *(f"student-{name}" for name in STUDENTS)}
    assert manifest["versions"]["torch"] == torch.__version__
    assert lab.root.name == f"vision-{recipe_hash(lab.config)}"
    assert (lab.root / "config.yaml").read_text().startswith("shapes:")


def test_a_second_build_loads_instead_of_training(lab, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached lab must not train")

    monkeypatch.setattr(vision, "train", no_training)
    again = vision.build(lab.root.parent, tiny(), progress=False)
    assert again.metrics == lab.metrics and again.root == lab.root


def test_the_student_list_selects_stages_without_changing_the_folder(lab):
    assert recipe_hash(tiny(students=["output_kd"])) == recipe_hash(lab.config)
    assert recipe_hash(tiny(seed=1)) != recipe_hash(lab.config)
    how_it_runs = TrainConfig(epochs=1, batch_size=64, progress=False, teacher_cache_mb=0)
    assert recipe_hash(tiny(student_train=how_it_runs)) == recipe_hash(lab.config)
    assert recipe_hash(tiny(student_train=TrainConfig(epochs=2, batch_size=64))) != recipe_hash(lab.config)
    subset = vision.build(lab.root.parent, tiny(students=["output_kd"]), progress=False)
    assert list(subset.metrics) == ["teacher", "output_kd"]
    assert subset.metrics["output_kd"] == lab.metrics["output_kd"]


def test_a_killed_build_resumes_at_the_unfinished_stage(tmp_path, monkeypatch):
    config = tiny(students=["labels_only", "output_kd"])
    trained = []
    real_train = vision.train

    def dying_train(model, data, run_dir, *args, **kwargs):
        trained.append(run_dir.name)
        if run_dir.name == "student-output_kd" and trained.count("student-output_kd") == 1:
            raise KeyboardInterrupt
        return real_train(model, data, run_dir, *args, **kwargs)

    monkeypatch.setattr(vision, "train", dying_train)
    with pytest.raises(KeyboardInterrupt):
        vision.build(tmp_path, config, progress=False)
    lab = vision.build(tmp_path, config, progress=False)
    assert trained == ["teacher", "student-labels_only", "student-output_kd", "student-output_kd"]
    assert list(lab.metrics) == ["teacher", "labels_only", "output_kd"]


def test_an_unknown_student_is_refused_before_any_training():
    with pytest.raises(ValueError, match=r"unknown student 'output_dk'. Did you mean 'output_kd'\?"):
        validate({"students": ["output_dk"]}, VisionLabConfig)


def test_quick_config_is_the_same_recipe_with_less_data():
    quick = vision.quick_config()
    assert quick.n_train < VisionLabConfig().n_train
    assert quick.teacher_model == VisionLabConfig().teacher_model


def test_a_stage_whose_strategy_changed_is_trained_again_and_only_that_one(tmp_path, monkeypatch):
    config = tiny(students=["labels_only", "output_kd"])
    first = vision.build(tmp_path, config, progress=False)
    original = vision.student_strategies

    def hotter_kd():
        strategies = original()
        strategies["output_kd"]["terms"][0] = {**strategies["output_kd"]["terms"][0], "temperature": 8.0}
        return strategies

    trained = []
    real_train = vision.train
    monkeypatch.setattr(vision, "student_strategies", hotter_kd)
    monkeypatch.setattr(vision, "train", lambda model, data, run_dir, *a, **k: trained.append(run_dir.name)
                        or real_train(model, data, run_dir, *a, **k))
    second = vision.build(tmp_path, config, progress=False)
    assert trained == ["student-output_kd"]
    assert second.metrics["labels_only"] == first.metrics["labels_only"]
    assert second.metrics["output_kd"]["kd"] != first.metrics["output_kd"]["kd"]


def test_baselines_a_reseeded_teacher_and_an_untrained_student(lab):
    with pytest.raises(ValueError, match="baseline_teacher=True"):
        lab.baseline_teacher()
    with_baseline = vision.build(lab.root.parent, tiny(), progress=False, baseline_teacher=True)
    assert with_baseline.metrics["teacher"] == lab.metrics["teacher"]  # loaded, not retrained
    assert "test_shifted/accuracy" in with_baseline.metrics["teacher_reseeded"]
    reseeded, teacher = with_baseline.baseline_teacher(), lab.teacher()
    assert not torch.equal(reseeded.head.weight, teacher.head.weight)
    a, b = lab.untrained_student(seed=1), lab.untrained_student(seed=1)
    assert torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.head.weight, lab.untrained_student(seed=2).head.weight)
