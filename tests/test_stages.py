"""The run directory and the stage runner: caching, resuming, sharding, failures, older layouts."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdlens.rundir import LAYOUT, LayoutError, RunDir, StageOutput
from kdlens.stages import Stage, StageRunner, run_stage, spans


def summing(calls: list, shards=range(5)) -> Stage:
    """Sum of squares of 0..4, one shard per number; ``calls`` records every shard mapped."""
    def map_shard(shard, _):
        i = shard.start
        calls.append(i)
        return {"sum": torch.tensor([float(i * i)], dtype=torch.float64)}

    def reduce(states, _):
        total = float(sum(s["sum"] for s in states))
        return StageOutput(figures={"total": total}, rows=[{"i": i} for i in range(len(states))],
                           summary={"total": total})

    return Stage("squares", {"n": len(shards)}, shards=spans(len(shards), 1), map=map_shard, reduce=reduce,
                 examples=len(shards))


def test_a_stage_writes_its_files_and_is_not_run_twice(tmp_path):
    calls = []
    assert run_stage(tmp_path, summing(calls))["total"] == 30.0
    assert run_stage(tmp_path, summing(calls))["total"] == 30.0
    assert calls == [0, 1, 2, 3, 4]
    stage = RunDir(tmp_path).stage("squares")
    assert stage.figures() == {"total": 30.0} and stage.rows() == [{"i": i} for i in range(5)]
    assert not stage.file("parts").exists()  # the shards' states go once the stage is written
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["layout"] == LAYOUT and manifest["stages"]["squares"]["done"]


def test_an_interrupted_sharded_stage_redoes_only_the_missing_shards(tmp_path):
    calls = []
    stage = summing(calls)
    inner = stage.map

    def killed_at_three(shard, stage_dir):
        if shard.start == 3:
            raise KeyboardInterrupt
        return inner(shard, stage_dir)

    stage.map = killed_at_three
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path, stage)
    assert not json.loads((tmp_path / "manifest.json").read_text())["stages"]["squares"]["done"]
    calls.clear()
    assert run_stage(tmp_path, summing(calls))["total"] == 30.0 and calls == [3, 4]


def test_changed_inputs_start_the_stage_over(tmp_path):
    calls = []
    run_stage(tmp_path, summing(calls))
    stage = summing(calls, shards=range(3))
    assert run_stage(tmp_path, stage)["total"] == 5.0 and calls[-3:] == [0, 1, 2]


def test_a_failing_stage_keeps_the_finished_ones(tmp_path):
    run = RunDir(tmp_path)
    first = Stage("first", {}, compute=lambda d: StageOutput(figures={"ok": True}))
    broken = Stage("second", {}, compute=lambda d: 1 / 0)
    with StageRunner(run, ["first", "second"], progress=False) as runner:
        runner.run(first)
        with pytest.raises(ZeroDivisionError):
            runner.run(broken)
    assert run.stage("first").figures() == {"ok": True}
    assert not run.manifest()["stages"]["second"]["done"]


def test_a_stage_turned_off_forgets_its_files(tmp_path):
    run = RunDir(tmp_path)
    run_stage(run, Stage("probe", {}, compute=lambda d: StageOutput(figures={"x": 1})))
    with StageRunner(run, ["probe"], progress=False) as runner:
        runner.skip("probe")
    assert "probe" not in run.manifest()["stages"] and run.stage("probe").figures() is None


def test_json_states_and_what_a_stage_says(tmp_path):
    said = []

    def map_shard(shard, stage_dir):
        stage_dir.say(f"shard {shard.start}")
        return {"texts": [f"t{shard.start}"]}

    stage = Stage("texts", {}, shards=spans(2, 1), map=map_shard, examples=2,
                  reduce=lambda states, d: StageOutput(rows=[{"text": t} for s in states for t in s["texts"]]))
    with StageRunner(RunDir(tmp_path), progress=False, on_say=said.append) as runner:
        runner.run(stage)
    assert said == ["shard 0", "shard 1"]
    assert RunDir(tmp_path).stage("texts").rows() == [{"text": "t0"}, {"text": "t1"}]


def test_nan_in_rows_is_written_as_null(tmp_path):
    RunDir(tmp_path).stage("s").write(StageOutput(rows=[{"x": float("nan")}]))
    assert RunDir(tmp_path).stage("s").rows() == [{"x": None}]


def test_a_run_directory_of_an_older_layout_says_how_to_run_it_again(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": {}, "versions": {"kdlens": "0.1.0"}}))
    with pytest.raises(LayoutError, match=r"layout 1 \(written by kdlens 0\.1\.0\).*rm -rf"):
        RunDir(tmp_path).manifest()


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(-50, 50), min_size=1, max_size=8), st.integers(1, 8))
def test_sharding_does_not_change_the_reduced_result(tmp_path_factory, values, step):
    def stage(step):
        return Stage("sum", {"values": values}, shards=spans(len(values), step), examples=len(values),
                     map=lambda s, _: {"s": torch.tensor([float(sum(values[s.start:s.stop]))], dtype=torch.float64)},
                     reduce=lambda states, _: StageOutput(summary={"s": float(sum(x["s"] for x in states))}))

    one = run_stage(tmp_path_factory.mktemp("one"), stage(len(values)))["s"]
    each = run_stage(tmp_path_factory.mktemp("each"), stage(step))["s"]
    assert one == each == float(sum(values))
