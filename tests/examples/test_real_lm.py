"""The real-model example (examples/real_lm/) on a handful of its questions, through `kdlens audit` as a user runs
it: SmolLM2-135M-Instruct from its GGUF file against its int8 and half-depth copies."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kdlens.cli import app
from kdlens.tasks.questions import load_questions
from tests.real_models import smollm2_gguf

EXAMPLE = Path(__file__).parents[2] / "examples" / "real_lm"


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_lm")
    config = yaml.safe_load((EXAMPLE / "audit.yaml").read_text())
    gguf = str(smollm2_gguf())
    config["run_dir"] = str(root / "run")
    for source in (config["teacher"], *config["students"].values()):
        source["gguf"] = gguf
    config["data"].update(path=str(EXAMPLE / config["data"]["path"].split("/")[-1]),
                          shots_path=str(EXAMPLE / config["data"]["shots_path"].split("/")[-1]), n=6)
    config["probes"]["representations"]["n"] = 4
    config["probes"]["calibration"] = {"enabled": False}  # the slowest probe here; the question audits cover it
    path = root / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["audit", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    return root, result.output, json.loads((root / "run" / "results.json").read_text())


def test_the_example_holds_at_least_100_solved_questions_of_its_own():
    rows = load_questions(EXAMPLE / "questions.jsonl", fields={"trace": "solution"})
    assert len(rows) >= 100 and len({r.question for r in rows}) == len(rows)
    assert {r.category for r in rows} >= {"arithmetic", "where_is", "comparison"}
    shots = load_questions(EXAMPLE / "shots.jsonl", fields={"trace": "solution"})
    assert not {s.question for s in shots} & {r.question for r in rows}


def test_every_worked_solution_states_only_true_equations():
    from kdlens.tasks.arithmetic import find_equations

    for row in load_questions(EXAMPLE / "questions.jsonl", fields={"trace": "solution"}):
        wrong = [e.text for e in find_equations(row.trace or "") if not e.correct]
        assert not wrong, (row.line, wrong)


def test_the_audit_runs_and_compares_the_compressed_copies(audited):
    root, output, results = audited
    assert results["data"]["task"] == "questions" and results["data"]["splits"] == {"test": 6}
    assert set(results["students"]) == {"int8", "half_depth"}
    models = results["models"]
    assert models["int8"]["weights_mb"] < 0.6 * models["teacher"]["weights_mb"]
    assert models["half_depth"]["parameters"] < 0.7 * models["teacher"]["parameters"]
    cka = json.loads((root / "run" / "stages" / "representations" / "figures.json").read_text())
    assert len(cka["students"]["half_depth"]["student_layers"]) == 16  # embed + 15 of 30 blocks
    assert "report.html" in output or (root / "run" / "report.html").exists()


def test_a_verdict_never_recommends_a_student_that_does_not_answer(audited):
    _, _, results = audited
    for entry in results["students"].values():
        if entry["accuracy"] is not None and entry["accuracy"] < 0.5:
            assert entry["verdict"] not in ("recommended",)
    if not results["scorecard"]["teacher_reference"]["is_reference"]:
        assert results["scorecard"]["chosen"] is None
