"""The examples run as their comments say: your own models and images, audited with `kdlens audit`."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdlens import audit
from kdlens.audit.lm.config import LMAuditConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_own_models_example_runs_end_to_end(tmp_path):
    folder = tmp_path / "own_models"
    shutil.copytree(EXAMPLES / "own_models", folder)
    subprocess.run([sys.executable, "prepare.py", "--n-train", "256", "--n-test", "40", "--epochs", "1"],
                   cwd=folder, check=True, capture_output=True)
    config = yaml.safe_load((folder / "audit_own.yaml").read_text())
    config["probes"]["robustness"] = {"n": 16, "steps": 1, "epsilons": [0.0157]}  # the example's own settings, smaller
    (folder / "small.yaml").write_text(yaml.safe_dump(config))
    kdlens = Path(sys.executable).with_name("kdlens")
    done = subprocess.run([str(kdlens), "audit", "small.yaml", "--quiet"], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    results = yaml.safe_load((folder / "runs" / "own" / "results.json").read_text())  # JSON is YAML
    small = results["students"]["small"]
    assert results["data"]["classes"] == ["0_circle", "1_square", "2_triangle", "3_cross"]  # sorted folder names
    assert small["evidence_mass"] is not None and small["accuracy_shifted"] is not None
    assert small["right_for_wrong_reasons"] is not None  # the example's explicit agreement threshold
    assert results["layers"]["small"]["attribution"] == "0.4"
    assert (folder / "runs" / "own" / "report.html").is_file()


def test_the_own_language_models_example_is_a_valid_config_that_names_missing_folders(tmp_path):
    config = yaml.safe_load((EXAMPLES / "audit_lm_own.yaml").read_text())
    LMAuditConfig.model_validate(config)
    config["run_dir"] = str(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="/models/qwen-7b.*no such folder"):
        audit.run(config, progress=False)
