"""Shares of a run in one process: who does which shard, the parts' records, ``--shard`` shares that never write the
manifest, ``--merge`` that maps nothing, and the devices a rank uses. (Several processes: tests/audit/
test_multiprocess.py.)"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kdlens import io
from kdlens.distributed import World
from kdlens.rundir import RunDir, StageOutput
from kdlens.stages import Shard, ShareDone, SharesMissing, Stage, StageRunner, spans, tiling_problem
from kdlens.subjects.devices import resolve_device


@given(st.integers(0, 60), st.integers(1, 9))
def test_the_shares_split_the_shards_once_each_without_padding(n_shards, n_shares):
    shards = list(range(n_shards))
    shares = [World.shard(f"{i}/{n_shares}").share(shards) for i in range(n_shares)]
    assert sorted(s for share in shares for s in share) == shards  # every shard once
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # uneven counts are normal, never padded


@pytest.mark.parametrize("spec", ["3/3", "1", "-1/2", "a/b", "1/0", "2/1"])
def test_a_bad_share_is_refused_with_the_form_it_takes(spec):
    with pytest.raises(ValueError, match=r"i/n with 0 <= i < n"):
        World.shard(spec)


@given(st.integers(0, 100), st.integers(1, 30))
def test_spans_tile_the_examples_and_a_broken_tiling_is_named(n, step):
    shards = spans(n, step)
    assert tiling_problem(shards, n) is None
    if len(shards) > 2:
        assert "gap" in tiling_problem(shards[:1] + shards[2:], n)
    if len(shards) > 1:
        assert "overlap" in tiling_problem(shards + [shards[0]], n)
    if n:
        assert "cover" in tiling_problem(shards[:-1], n)


def test_tiling_is_checked_per_split():
    shards = spans(5, 2, "test") + spans(3, 2, "shifted")
    assert tiling_problem(shards, {"test": 5, "shifted": 3}) is None
    assert "split 'shifted' cover 3 of 4" in tiling_problem(shards, {"test": 5, "shifted": 4})
    assert "does not have" in tiling_problem(shards + [Shard(0, 1, "other")], {"test": 5, "shifted": 3})


def squares(calls: list, n: int = 7, step: int = 2) -> Stage:
    """Sum of squares of 0..n-1 in shards of ``step``; ``calls`` records each shard's start as it is mapped."""
    def map_shard(shard, _):
        calls.append(shard.start)
        return {"sum": torch.tensor([float(sum(i * i for i in range(shard.start, shard.stop)))],
                                    dtype=torch.float64)}

    def reduce(states, _):
        total = float(sum(s["sum"] for s in states))
        return StageOutput(figures={"total": total}, summary={"total": total})

    return Stage("squares", {"n": n}, shards=spans(n, step), map=map_shard, reduce=reduce, examples=n)


def run_as(run_dir, world: World, stage: Stage, merge_only: bool = False) -> dict:
    with StageRunner(RunDir(run_dir), progress=False, world=world, merge_only=merge_only) as runner:
        return runner.run(stage)


def test_shares_map_their_shards_and_the_merge_reduces_them_without_mapping(tmp_path):
    calls: list = []
    RunDir(tmp_path).claim()
    for i in range(3):
        assert run_as(tmp_path, World.shard(f"{i}/3"), squares(calls)) == {}
    assert sorted(calls) == [0, 2, 4, 6] and calls[:2] == [0, 6]  # share 0 had shards 0 and 3
    assert not RunDir(tmp_path).manifest()["stages"]  # shares never write the manifest
    calls.clear()
    assert run_as(tmp_path, World(), squares(calls), merge_only=True)["total"] == 91.0 and calls == []
    record = RunDir(tmp_path).manifest()["stages"]["squares"]
    assert [(p["examples"], p["by"]) for p in record["shards"]] == [
        ([0, 2], "shard 0/3"), ([2, 4], "shard 1/3"), ([4, 6], "shard 2/3"), ([6, 7], "shard 0/3")]
    calls.clear()
    assert run_as(tmp_path, World.shard("1/3"), squares(calls))["total"] == 91.0 and calls == []  # done: cached


def test_the_merge_refuses_to_map_and_says_what_is_missing(tmp_path):
    calls: list = []
    RunDir(tmp_path).claim()
    run_as(tmp_path, World.shard("0/2"), squares(calls))
    with pytest.raises(SharesMissing, match=r"stage squares.* 2 of 4 are missing.*--shard i/n.*--merge"):
        run_as(tmp_path, World(), squares(calls), merge_only=True)
    calls.clear()
    assert run_as(tmp_path, World(), squares(calls))["total"] == 91.0 and sorted(calls) == [2, 6]  # the rest here


def test_a_share_stops_at_a_stage_that_needs_every_share(tmp_path):
    RunDir(tmp_path).claim()
    later = Stage("after", {}, compute=lambda d: StageOutput(figures={"x": 1}))
    with StageRunner(RunDir(tmp_path), progress=False, world=World.shard("0/2")) as runner:
        runner.run(squares([]))
        with pytest.raises(ShareDone) as stopped:
            runner.run(later)
    assert stopped.value.stage == "after" and stopped.value.mapped == ["squares"]
    assert runner.mapped == {"squares": 2}


def test_parts_of_other_inputs_or_another_shard_are_never_read(tmp_path):
    calls: list = []
    RunDir(tmp_path).claim()
    run_as(tmp_path, World.shard("0/1"), squares(calls))  # every part saved by one share
    folder = next((tmp_path / "stages" / "squares" / "parts").iterdir())
    first, second = sorted(folder.iterdir())[:2]
    second.write_bytes(first.read_bytes())  # a part whose record says it covers 0-2, under the name of 2-4
    calls.clear()
    assert run_as(tmp_path, World(), squares(calls))["total"] == 91.0 and calls == [2]  # computed again
    calls.clear()
    assert run_as(tmp_path, World(), squares(calls, n=8))["total"] == 140.0 and len(calls) == 4  # new inputs


def test_new_inputs_keep_the_shares_parts_of_these_inputs(tmp_path):
    calls: list = []
    run_as(tmp_path, World(), squares(calls, n=5))
    run_as(tmp_path, World.shard("0/2"), squares(calls, n=7))  # shares of the new inputs, before the merge
    calls.clear()
    assert run_as(tmp_path, World(), squares(calls, n=7))["total"] == 91.0 and sorted(calls) == [2, 6]


def test_a_json_part_records_its_examples_and_who_made_it(tmp_path):
    stage = Stage("texts", {}, shards=spans(3, 2), examples=3,
                  map=lambda s, _: {"texts": list("ab")[: s.stop - s.start]},
                  reduce=lambda states, _: StageOutput(rows=[{"t": t} for s in states for t in s["texts"]]))
    RunDir(tmp_path).claim()
    run_as(tmp_path, World.shard("1/2"), stage)
    (saved,) = (tmp_path / "stages" / "texts" / "parts").rglob("*.json")
    assert json.loads(saved.read_text()) == {"shard": ["", 2, 3], "by": "shard 1/2", "state": {"texts": ["a"]}}


def test_torn_writes_under_a_kept_folder_stay(tmp_path):
    (tmp_path / "parts").mkdir()
    torn = [tmp_path / ".figures.json.a.tmp", tmp_path / "parts" / ".x.json.b.tmp"]
    for path in torn:
        path.write_text("")
    assert io.remove_torn_writes(tmp_path, keep="parts") == torn[:1] and torn[1].exists()


def test_auto_is_the_cpu_here_and_a_missing_gpu_lists_the_devices():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == "cpu" and resolve_device("auto", local_rank=3, ranks=4) == "cpu"
    with pytest.raises(ValueError, match=r"one of the devices this machine has \(cpu\).*kdlens env"):
        resolve_device("cuda", local_rank=1, ranks=2)


def test_an_audit_naming_a_missing_gpu_fails_before_any_work(tmp_path):
    from kdlens import audit

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    config = {"run_dir": str(tmp_path / "run"), "device": "cuda", "data": {"task": "tensors", "splits": {
        "test": str(tmp_path / "missing.safetensors")}}, "teacher": {"checkpoint": str(tmp_path / "none")}}
    with pytest.raises(ValueError, match=r"Expected `device`.*\(cpu\).*'cuda'"):  # not the missing files first
        audit.run(config, progress=False)
    assert not (tmp_path / "run").exists()
