"""A run directory cannot lie: a stage whose files were deleted, cut short or changed is computed again on the next
run (the results equal an undamaged run's), and the report on a damaged run names the stage to re-run (issue 14,
item 2)."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from kdlens import audit
from kdlens.cli import app
from kdlens.report import render
from kdlens.rundir import DamagedError
from tests.reliability.runs import KINDS

CASES = [(kind, stage) for kind, (_, stages) in KINDS.items() for stage in stages]


def damaged_copy(finished, tmp_path, stage: str, how: str):
    """A copy of the finished run whose stage folder is deleted, has its last file cut in half, or has a
    ``figures.json`` that is not JSON."""
    root, config = finished
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    folder = run / "stages" / stage
    files = sorted(folder.iterdir())
    if how == "deleted":
        shutil.rmtree(folder)
    elif how == "truncated":
        files[-1].write_bytes(files[-1].read_bytes()[: len(files[-1].read_bytes()) // 2])
    else:
        (folder / "figures.json").write_text("not json at all")
    return {**config, "run_dir": str(run)}, run


@pytest.mark.parametrize("how", ["deleted", "truncated", "garbage"])
@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_a_damaged_stage_is_computed_again_to_the_same_results(finished, tmp_path, case, how):
    kind, stage = case
    config, run = damaged_copy(finished[kind], tmp_path, stage, how)
    with pytest.raises(DamagedError, match=f"stage {stage}: .*that stage is recomputed"):  # the report names it
        render(run)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 2 and f"stage {stage}" in result.output and "Traceback" not in result.output
    audit.run(config, progress=False)
    assert (run / "results.json").read_text() == (finished[kind][0] / "run" / "results.json").read_text()
    render(run)


def test_a_truncated_results_file_is_named_with_what_to_run(finished, tmp_path):
    config, run = damaged_copy(finished["classifier"], tmp_path, "gallery", "deleted")
    text = (run / "results.json").read_text()
    (run / "results.json").write_text(text[: len(text) // 3])
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 2 and "results.json" in result.output and "not valid JSON" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("text", ["{{{", "[1, 2]"])
def test_a_manifest_that_is_not_kdlens_s_says_how_to_start_over(finished, tmp_path, text):
    config, run = damaged_copy(finished["classifier"], tmp_path, "gallery", "deleted")
    (run / "manifest.json").write_text(text)
    with pytest.raises(DamagedError, match=r"manifest.json to be the manifest kdlens wrote.*start over \(rm -rf "):
        audit.run(config, progress=False)
    result = CliRunner().invoke(app, ["report", str(run)])  # the report reads the manifest through the same check
    assert result.exit_code == 2 and "manifest.json to be the manifest kdlens wrote" in result.output
    shutil.rmtree(run)  # the fix it names
    audit.run(config, progress=False)
    assert (run / "results.json").read_text() == (finished["classifier"][0] / "run" / "results.json").read_text()
