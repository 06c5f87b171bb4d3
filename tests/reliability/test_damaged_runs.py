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
from tests.audit.test_bad_input import tiny_cnn

STAGES = ("outputs", "representations", "attribution", "robustness", "gallery")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    import torch
    from safetensors.torch import save_file

    from kdlens.subjects import save_classifier

    root = tmp_path_factory.mktemp("finished")
    g = torch.Generator().manual_seed(0)
    save_file({"inputs": torch.rand(16, 3, 16, 16, generator=g), "labels": torch.randint(0, 3, (16,), generator=g)},
              str(root / "test.safetensors"))
    kwargs = {"n_classes": 3, "widths": [2, 4, 4]}
    config = {"run_dir": str(root / "run"), "data": {"task": "tensors", "splits": {"test": str(root /
                                                                                              "test.safetensors")}},
              "teacher": {"checkpoint": str(save_classifier(tiny_cnn(), root / "teacher", kwargs))},
              "students": {"small": {"checkpoint": str(save_classifier(tiny_cnn(seed=1), root / "student", kwargs))}},
              "probes": {"robustness": {"steps": 1, "epsilons": []},
                         "attribution": {"agreement_threshold": 0.3}}}
    audit.run(config, progress=False)
    return root, config


def damaged_copy(finished, tmp_path, stage: str, how: str):
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
@pytest.mark.parametrize("stage", STAGES)
def test_a_damaged_stage_is_computed_again_to_the_same_results(finished, tmp_path, stage, how):
    config, run = damaged_copy(finished, tmp_path, stage, how)
    with pytest.raises(DamagedError, match=f"stage {stage}: .*that stage is recomputed"):  # the report names it
        render(run)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 2 and f"stage {stage}" in result.output and "Traceback" not in result.output
    audit.run(config, progress=False)
    assert (run / "results.json").read_text() == (finished[0] / "run" / "results.json").read_text()
    render(run)


def test_a_truncated_results_file_is_named_with_what_to_run(finished, tmp_path):
    config, run = damaged_copy(finished, tmp_path, "gallery", "deleted")
    text = (run / "results.json").read_text()
    (run / "results.json").write_text(text[: len(text) // 3])
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 2 and "results.json" in result.output and "not valid JSON" in result.output
    assert "Traceback" not in result.output
