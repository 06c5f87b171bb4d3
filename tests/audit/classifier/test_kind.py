"""``kdlens.audit.run`` end to end on a tiny lab: results.json's contract, resume after a failure, bad input."""

import json

import pytest
import torch
import yaml

from kdlens import audit
from kdlens.audit.classifier.headline import STUDENT_KEYS
from kdlens.audit.results import SCHEMA_VERSION
from kdlens.io import read_json
from kdlens.lab import vision
from tests.lab.test_vision import tiny

STUDENTS = ["labels_only", "output_kd"]


def lab_config(tmp_path, **overrides) -> dict:
    """An audit of the tiny lab (built once per test session under the shared root)."""
    root, recipe = overrides.pop("_lab")
    lab = {"lab": "vision", "lab_root": str(root), "lab_recipe": str(recipe)}
    config = {
        "run_dir": str(tmp_path / "run"),
        "data": {"task": "shapes", "n": 64},
        "teacher": lab,
        "students": {name: {**lab, "lab_model": name} for name in STUDENTS},
        "baselines": {name: {**lab, "lab_model": name} for name in ("teacher_reseeded", "untrained_student")},
        "probes": {"robustness": {"n": 32, "epsilons": [2 / 255, 8 / 255], "steps": 3}},
        "batch_size": 64,
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def labbed(tmp_path_factory):
    """A built tiny lab (teacher, re-seeded teacher, two students) and its recipe file."""
    root = tmp_path_factory.mktemp("labs")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny(students=STUDENTS).model_dump(mode="json")))
    vision.build(root, tiny(students=STUDENTS), progress=False, baseline_teacher=True)
    return root, recipe


@pytest.fixture(scope="module")
def finished(labbed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    return tmp, audit.run(lab_config(tmp, _lab=labbed), progress=False)


def test_results_json_is_the_documented_contract(finished):
    tmp, results = finished
    on_disk = read_json(tmp / "run" / "results.json")
    assert on_disk == results
    assert results["schema_version"] == SCHEMA_VERSION
    assert list(results["students"]) == STUDENTS  # the config's order, not sorted
    for name in STUDENTS:
        student = results["students"][name]
        assert set(STUDENT_KEYS) <= set(student)
        for key in ("accuracy", "accuracy_shifted", "agreement", "kl", "ece", "cka_mean_best",
                    "attribution_spearman", "evidence_mass", "right_for_wrong_reasons", "cue_flip_rate",
                    "adversarial_agreement"):
            assert student[key] is not None, (name, key)
        assert 0 <= student["accuracy"] <= 1 and student["kl"] >= 0 and -1 <= student["attribution_spearman"] <= 1
        assert student["verdict"] in ("recommended", "acceptable", "at risk", "rejected")
        assert name not in student["verdict_text"] or True
        assert student["verdict_text"].endswith(".")
    assert results["teacher"]["accuracy"] is not None and results["teacher"]["accuracy_shifted"] is not None
    assert set(results["baselines"]) == {"teacher_reseeded", "untrained_student"}
    assert results["scorecard"]["chosen"] in (*STUDENTS, None)
    assert results["data"]["classes"] == ["circle", "square", "triangle", "cross"]
    assert {"agreement_threshold", "evidence_threshold"} <= set(results["thresholds"])
    assert results["layers"]["teacher"] == {"attribution": "block3",
                                            "representations": ["block1", "block2", "block3", "embed"]}


def test_headline_numbers_are_the_stage_figures(finished):
    """results.json restates the stages; it computes nothing of its own."""
    tmp, results = finished
    stages = tmp / "run" / "stages"
    outputs = read_json(stages / "outputs" / "figures.json")["splits"]
    attribution = read_json(stages / "attribution" / "figures.json")["models"]
    robustness = read_json(stages / "robustness" / "figures.json")["models"]
    for name in STUDENTS:
        student = results["students"][name]
        assert student["accuracy"] == outputs["test"]["models"][name]["accuracy"]
        assert student["accuracy_shifted"] == outputs["test_shifted"]["models"][name]["accuracy"]
        assert student["kl"] == outputs["test"]["models"][name]["kl"]
        assert student["attribution_spearman"] == attribution[name]["spearman"]["mean"]
        shares = attribution[name]["verdicts"]["overall"]
        right = shares["right_for_right_reasons"] + shares["right_for_wrong_reasons"]
        assert student["right_for_wrong_reasons"] == pytest.approx(shares["right_for_wrong_reasons"] / right)
        assert student["cue_flip_rate"] == robustness[name]["student_flips"]["mean"]
        assert student["adversarial_agreement"] == robustness[name]["agree_on_student_attack"]["mean"]
    rows = [json.loads(line) for line in (stages / "outputs" / "rows.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["model"] == "output_kd" and r["split"] == "test"]
    assert results["students"]["output_kd"]["accuracy"] == pytest.approx(sum(r["correct"] for r in mine) / len(mine))


def test_every_stage_is_cached_and_a_second_run_gives_the_same_file(finished, labbed):
    tmp, results = finished
    manifest = read_json(tmp / "run" / "manifest.json")["stages"]
    assert {"outputs", "representations", "attribution", "robustness", "gallery"} <= set(manifest)
    assert all(record["done"] for record in manifest.values())
    before = (tmp / "run" / "results.json").read_bytes()
    again = audit.run(lab_config(tmp, _lab=labbed), progress=False)
    assert again == results and (tmp / "run" / "results.json").read_bytes() == before
    assert read_json(tmp / "run" / "manifest.json")["stages"] == manifest  # nothing recomputed


def test_a_run_killed_in_a_later_stage_resumes_to_identical_results(finished, labbed, tmp_path, monkeypatch):
    from kdlens.audit.classifier import kind as run_module

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process were interrupted inside the robustness stage

    config = lab_config(tmp_path, _lab=labbed)
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "robustness_stage", killed)
        with pytest.raises(KeyboardInterrupt):
            audit.run(config, progress=False)
    done = read_json(tmp_path / "run" / "manifest.json")["stages"]
    assert done["attribution"]["done"] and "robustness" not in done
    assert not (tmp_path / "run" / "results.json").exists()
    resumed = audit.run(config, progress=False)
    assert read_json(tmp_path / "run" / "manifest.json")["stages"]["attribution"] == done["attribution"]
    reference = (finished[0] / "run" / "results.json").read_text()
    assert (tmp_path / "run" / "results.json").read_text() == reference
    assert resumed == json.loads(reference)


def test_a_probe_turned_off_leaves_its_keys_null(labbed, tmp_path):
    config = lab_config(tmp_path, _lab=labbed, baselines={},
                        probes={"robustness": {"enabled": False}, "representations": {"enabled": False}})
    results = audit.run(config, progress=False)
    for name in STUDENTS:
        student = results["students"][name]
        for key in ("cue_flip_rate", "adversarial_agreement", "cka_mean_best", "right_for_wrong_reasons"):
            assert student[key] is None, key  # no re-seeded teacher: no verdict thresholds either
        assert student["attribution_spearman"] is not None
    assert "cue_flip_rate" not in results["scorecard"]["metrics_scored"]
    assert not (tmp_path / "run" / "stages" / "robustness").exists()


def test_explicit_thresholds_give_verdicts_without_a_reseeded_teacher(labbed, tmp_path):
    config = lab_config(tmp_path, _lab=labbed, baselines={},
                        probes={"attribution": {"agreement_threshold": 0.5}, "robustness": {"enabled": False}})
    results = audit.run(config, progress=False)
    assert results["thresholds"] == {"agreement_threshold": 0.5}
    assert all(results["students"][n]["right_for_wrong_reasons"] is not None for n in STUDENTS)


def test_python_callers_pass_modules(labbed, tmp_path):
    torch.manual_seed(0)
    lab = vision.build(labbed[0], tiny(students=STUDENTS), progress=False)
    config = {"run_dir": str(tmp_path / "run"), "data": {"shapes": tiny().shapes.model_dump(), "n": 48},
              "probes": {"robustness": {"enabled": False}}}
    results = audit.run(config, teacher=lab.teacher(), students={"mine": lab.student("output_kd")}, progress=False)
    assert list(results["students"]) == ["mine"] and results["students"]["mine"]["accuracy"] is not None
