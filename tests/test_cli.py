"""The kdlens console script: --version, --help and env, through typer's runner and the installed entry point."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kdlens
from kdlens.cli import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"kdlens {kdlens.__version__}"


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "--version" in result.output and "env" in result.output


def test_env_reports_torch():
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 0
    assert "torch" in result.output and kdlens.__version__ in result.output


def test_unknown_command_fails_with_usage():
    result = runner.invoke(app, ["audti"])
    assert result.exit_code != 0
    assert "No such command" in result.output


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "kdlens"  # the entry point pip wrote beside this interpreter
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"kdlens {kdlens.__version__}"


# ---------------------------------------------------------------------------------------------------- distill

TINY_SHAPES = {"image_size": 16, "cue_size": 3, "n_classes": 3}


def write_config(tmp_path, **sections) -> Path:
    import yaml

    path = tmp_path / "distill.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


def tiny_teacher(tmp_path) -> Path:
    import torch

    from kdlens.lab.cnn import SmallCNN
    from kdlens.subjects import save_classifier

    kwargs = {"n_classes": 3, "widths": [4, 8, 8]}
    torch.manual_seed(0)
    return save_classifier(SmallCNN(**kwargs), tmp_path / "teacher", kwargs)


def distill_sections(tmp_path):
    return {
        "run_dir": str(tmp_path / "run"),
        "data": {"shapes": TINY_SHAPES, "n": 128, "eval": {"test_shifted": 64}},
        "teacher": {"checkpoint": str(tiny_teacher(tmp_path))},
        "student": {"architecture": "kdlens.lab.cnn:SmallCNN", "kwargs": {"n_classes": 3, "widths": [2, 4, 4]}},
        "strategy": {"name": "kd_fitnet", "terms": [
            {"loss": "kd", "temperature": 2.0},
            {"loss": "fitnet", "pairs": [{"teacher": "block3", "student": "block3"}]}]},
        "train": {"epochs": 2, "batch_size": 32, "progress": False},
    }


def test_distill_trains_saves_and_resumes(tmp_path):
    import json

    config = write_config(tmp_path, **distill_sections(tmp_path))
    first = runner.invoke(app, ["distill", str(config)])
    assert first.exit_code == 0, first.output
    run_dir = tmp_path / "run"
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert "kd_fitnet" in (run_dir / "config.yaml").read_text()  # the resolved config, defaults filled in
    assert "test_shifted/agreement" in first.output
    history = json.loads((run_dir / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]

    again = runner.invoke(app, ["distill", str(config)])  # a finished run resumes at its end: nothing retrained
    assert again.exit_code == 0, again.output
    assert json.loads((run_dir / "history.json").read_text()) == history


def test_distill_config_typo_exits_2_with_the_suggestion(tmp_path):
    sections = distill_sections(tmp_path)
    sections["train"]["epoch"] = sections["train"].pop("epochs")
    result = runner.invoke(app, ["distill", str(write_config(tmp_path, **sections))])
    assert result.exit_code == 2
    assert "Did you mean 'epochs'" in result.output and "Traceback" not in result.output


def test_distill_unknown_layer_lists_the_real_ones(tmp_path):
    sections = distill_sections(tmp_path)
    sections["strategy"]["terms"][1]["pairs"][0]["student"] = "block_3"
    result = runner.invoke(app, ["distill", str(write_config(tmp_path, **sections))])
    assert result.exit_code == 2 and "block3" in result.output  # one message naming the real layers, no traceback
    assert "Traceback" not in result.output


def test_distill_missing_file_exits_2(tmp_path):
    result = runner.invoke(app, ["distill", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "nope.yaml" in result.output


def test_lab_vision_builds_from_a_yaml_recipe(tmp_path):
    import yaml

    recipe = {"shapes": TINY_SHAPES, "n_train": 128, "n_transfer": 128, "n_eval": 100,
              "teacher_model": {"widths": [4, 8, 8]}, "student_model": {"widths": [2, 4, 4]},
              "teacher_train": {"epochs": 1, "batch_size": 64, "progress": False},
              "student_train": {"epochs": 1, "batch_size": 64, "progress": False},
              "students": ["labels_only", "output_kd"]}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["lab", "vision", "--config", str(path), "--root", str(tmp_path / "labs")])
    assert result.exit_code == 0, result.output
    assert "output_kd" in result.output and "shifted acc" in result.output
    assert len(list((tmp_path / "labs").glob("vision-*/models/student-output_kd/model.safetensors"))) == 1


def test_distill_from_the_lab_teacher_builds_only_the_teacher_with_the_data_task(tmp_path, monkeypatch):
    from kdlens.lab import vision

    calls = []
    teacher_dir = tiny_teacher(tmp_path)

    class Built:
        def teacher(self):
            from kdlens.subjects import load_classifier

            return load_classifier(teacher_dir)

    def fake_build(root, config, device="cpu", **kwargs):
        calls.append((root, config, device))
        return Built()

    monkeypatch.setattr(vision, "build", fake_build)
    sections = distill_sections(tmp_path)
    sections["teacher"] = {"lab": "vision", "lab_root": str(tmp_path / "labs")}
    result = runner.invoke(app, ["distill", str(write_config(tmp_path, **sections))])
    assert result.exit_code == 0, result.output
    (root, config, device), = calls
    assert root == str(tmp_path / "labs") and device == "cpu"
    assert config.students == [] and config.shapes.n_classes == 3 and config.shapes.image_size == 16


def audit_config(tmp_path) -> Path:
    """An audit of two untrained tiny CNNs saved as checkpoints, on a safetensors split."""
    import torch
    import yaml
    from safetensors.torch import save_file

    from kdlens.lab.cnn import SmallCNN
    from kdlens.subjects import save_classifier

    kwargs = {"n_classes": 3, "widths": [2, 4, 4]}
    for name, seed in (("teacher", 0), ("student", 1)):
        torch.manual_seed(seed)
        save_classifier(SmallCNN(**kwargs), tmp_path / name, kwargs)
    g = torch.Generator().manual_seed(0)
    save_file({"inputs": torch.rand(24, 3, 16, 16, generator=g), "labels": torch.randint(0, 3, (24,), generator=g)},
              str(tmp_path / "test.safetensors"))
    config = {"run_dir": str(tmp_path / "run"), "data": {"task": "tensors", "splits": {"test": str(tmp_path /
                                                                                                  "test.safetensors")}},
              "teacher": {"checkpoint": str(tmp_path / "teacher")},
              "students": {"small": {"checkpoint": str(tmp_path / "student")}},
              "probes": {"robustness": {"steps": 1, "epsilons": [0.01]}}}
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_audit_writes_results_and_the_report_and_prints_the_scorecard(tmp_path):
    result = runner.invoke(app, ["audit", str(audit_config(tmp_path)), "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert (run / "results.json").is_file() and (run / "report.html").is_file() and (run / "summary.md").is_file()
    assert "scorecard" in result.output and "small" in result.output and "report.html" in result.output
    (run / "report.html").unlink()
    again = runner.invoke(app, ["report", str(run)])
    assert again.exit_code == 0, again.output
    assert (run / "report.html").is_file()


def test_audit_config_errors_exit_2_with_the_suggestion(tmp_path):
    path = audit_config(tmp_path)
    path.write_text(path.read_text().replace("students:", "studens:"))
    result = runner.invoke(app, ["audit", str(path)])
    assert result.exit_code == 2
    assert "Did you mean 'students'" in result.output and "Traceback" not in result.output


def test_audit_errors_found_before_the_work_exit_2(tmp_path):
    path = audit_config(tmp_path)
    path.write_text(path.read_text().replace(str(tmp_path / "student"), str(tmp_path / "missing")))
    result = runner.invoke(app, ["audit", str(path)])
    assert result.exit_code == 2 and "missing" in result.output


def test_report_on_a_folder_without_results_exits_2(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "results.json" in result.output


def test_demo_config_audits_four_lab_students_against_both_baselines(tmp_path):
    from kdlens.audit import AuditConfig
    from kdlens.cli import demo_config
    from kdlens.config import validate
    from kdlens.lab.vision import DEMO_STUDENTS, STUDENTS

    config = validate(demo_config(tmp_path), AuditConfig)
    assert list(config.students) == list(DEMO_STUDENTS) and set(DEMO_STUDENTS) <= set(STUDENTS)
    assert set(config.baselines) == {"teacher_reseeded", "untrained_student"}
    assert config.run_dir == str(tmp_path / "demo") and config.teacher.lab_root == str(tmp_path / "lab")


def test_the_scorecard_is_never_cut_off_a_terminal(capsys):
    from kdlens import cli

    verdict = "Recommended. " + "A long verdict that names every risk it found, " * 4 + "to the end."
    student = {"verdict": "recommended", "verdict_text": verdict, "score": 0.8123456, "accuracy": 0.9876543,
               "accuracy_shifted": 0.5, "agreement": 0.97, "ece": 0.0312, "attribution_spearman": 0.83,
               "right_for_wrong_reasons": 0.153, "cue_flip_rate": 0.164}
    name = "a_student_with_a_long_name"
    results = {"kind": "classifier", "students": {name: student},
               "scorecard": {"chosen": name, "chosen_by_accuracy": name}}
    cli._print_scorecard(results)
    out = capsys.readouterr().out
    assert "…" not in out and "a_student_with_a_long_name" in out and "0.988" in out and "to the end." in out


def test_the_demo_over_a_run_directory_of_an_older_kdlens_says_what_to_remove(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "manifest.json").write_text('{"stages": {}, "versions": {"kdlens": "0.1.0"}}')
    result = runner.invoke(app, ["demo", "--root", str(tmp_path)])
    assert result.exit_code == 2 and "layout 1" in result.output and "rm -rf" in result.output
    assert not (tmp_path / "lab").exists()  # refused before the lab is built


def test_errors_print_their_whole_message_and_internal_ones_say_how_to_report_them():
    from kdlens.cli import error_message

    assert error_message(KeyError("Expected `layer` to be one of a, b, but got 'c'.")).startswith("Expected `layer`")
    whole = error_message(ValueError("Expected a teacher, but got none.", 2))
    assert whole == "('Expected a teacher, but got none.', 2)"  # all of it, not args[0]
    internal = error_message(KeyError("stages"))
    assert "KeyError: 'stages'" in internal and "--debug" in internal


@pytest.mark.parametrize("command", [["report"], ["lab", "vision", "--config"], ["lab", "lm", "--config"],
                                     ["distill"]])
def test_every_command_prints_a_user_error_as_one_message_and_debug_keeps_the_traceback(tmp_path, command):
    missing = str(tmp_path / "nowhere.yaml")
    result = runner.invoke(app, [*command, missing])
    assert result.exit_code == 2 and "nowhere" in result.output and "Traceback" not in result.output
    debug = runner.invoke(app, ["--debug", *command, missing])
    assert debug.exit_code != 0 and isinstance(debug.exception, (FileNotFoundError, ValueError))


@pytest.mark.parametrize("args, message", [
    (["--shard", "1/2", "--merge"], "Expected --shard or --merge, but got both"),
    (["--shard", "2/2"], "Expected `--shard` as i/n with 0 <= i < n"),
])
def test_audit_refuses_a_bad_share_before_reading_the_config(tmp_path, args, message):
    result = runner.invoke(app, ["audit", str(tmp_path / "never_read.yaml"), *args])
    assert result.exit_code == 2 and message in result.output


def test_audit_refuses_a_share_inside_a_launched_job(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, ["audit", str(tmp_path / "never_read.yaml"), "--shard", "0/2"])
    assert result.exit_code == 2 and "rank of a torchrun / accelerate job" in result.output
