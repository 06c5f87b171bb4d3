"""A run directory written before results.json's schema 2 is refused with what to run, never drawn wrong."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kdlens.cli import app
from kdlens.report import render
from kdlens.rundir import LayoutError


def test_a_schema_1_run_directory_says_which_kdlens_wrote_it_and_how_to_rerun(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 1, "kdlens_version": "0.1.0",
                                                       "data": {"task": "shapes"}}))
    with pytest.raises(LayoutError, match=r"schema 1 .*written by kdlens 0\.1\.0.*kdlens audit CONFIG.*rm -rf"):
        render(tmp_path)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "schema 1" in result.output
    assert not (tmp_path / "report.html").exists()


def test_an_unknown_kind_asks_for_a_newer_kdlens(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 2, "kind": "speech"}))
    with pytest.raises(LayoutError, match="kind 'speech'.*Update kdlens"):
        render(tmp_path)


def test_a_pipe_in_a_model_name_does_not_break_the_summary_table():
    from kdlens.report import summary_markdown

    student = {"verdict": "at risk", "verdict_text": "Trails | the teacher.", "accuracy": 0.9}
    results = {"kind": "classifier", "scorecard": {"chosen": "a|b", "chosen_by_accuracy": "a|b"},
               "teacher": {"accuracy": 0.95}, "students": {"a|b": student}}
    rows = [line for line in summary_markdown(results).splitlines() if line.startswith("|")]
    cells = {len(line.replace("\\|", "").split("|")) for line in rows}
    assert len(cells) == 1 and "a\\|b" in summary_markdown(results)
