"""The attribution stage sharded: the same files however its examples are split into shards and processes."""

import math

import pytest
import torch

from kdlens.audit.classifier import attribution as attribution_stages
from kdlens.audit.classifier import outputs as outputs_stages
from kdlens.io import load_tensors
from kdlens.lab.cnn import SmallCNN
from kdlens.probes.consistency import attribution_consistency
from kdlens.rundir import RunDir
from kdlens.tasks.files import EvalSplit
from kdlens.tasks.shapes import ShapesConfig, make_split
from tests.audit.classifier import map_in_shares, run_in_shares, written_across_shardings

N, BATCH = 22, 4  # shards of 1 batch: 6 (the last of 2 examples); of 3 batches: 2 (12 and 10)


def cnn(seed: int, widths=(4, 8, 8)) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(4, widths).eval()


@pytest.fixture(scope="module")
def setup():
    test = make_split(ShapesConfig(image_size=16, cue_size=3), "test", N)
    data = EvalSplit(test.images, test.labels, test.masks, test.difficulty)
    students = {"small": cnn(1, (2, 4, 4)), "other": cnn(2, (2, 4, 4))}
    baselines = {"teacher_reseeded": cnn(3), "untrained_student": cnn(4, (2, 4, 4))}
    layers = dict.fromkeys(["teacher", *students, *baselines], "block3")
    return cnn(0), students, baselines, data, layers


def build(setup, **kwargs):
    teacher, students, baselines, data, layers = setup
    return attribution_stages.attribution_stage(teacher, students, data, layers, baselines, keep_maps=5,
                                                batch_size=BATCH, **kwargs)


def files(run_dir) -> tuple:
    folder = run_dir / "stages" / "attribution"
    return ((folder / "figures.json").read_bytes(), (folder / "rows.jsonl").read_bytes(),
            (folder / "arrays.safetensors").read_bytes())


def test_the_files_are_the_same_however_the_examples_are_sharded(setup, tmp_path, monkeypatch):
    written = written_across_shardings(lambda: build(setup), files, tmp_path, monkeypatch)
    assert written[1] == written[3] == written[1000]
    figures = RunDir(tmp_path / "3").stage("attribution").figures()
    assert {"agreement_threshold", "evidence_threshold"} <= set(figures["thresholds"])
    assert len(figures["models"]["small"]["verdicts"]["by_difficulty"]) == 4
    assert figures["models"]["teacher"]["stability"]["n"] > 0


def test_saved_parts_hold_what_reduce_needs(setup, tmp_path, monkeypatch):
    """Each shard's part is a safetensors file of its examples' tensors, and the run that reads them back writes
    the values :func:`attribution_consistency` gives on the whole split at once."""
    monkeypatch.setattr(outputs_stages, "SHARD_BATCHES", 1)
    monkeypatch.setattr("kdlens.stages.MIN_SHARDS", 1)  # the chunk size alone sets the shards
    teacher, students, baselines, data, layers = setup
    stage = build(setup)
    parts = map_in_shares(tmp_path, stage, 3)
    assert [p.suffix for p in parts] == [".safetensors"] * len(stage.shards)
    last = load_tensors(parts[-1])  # examples 20-22
    assert {tuple(t.shape[:1]) for t in last.values()} == {(2,)}
    run_in_shares(tmp_path, stage, 3)
    out = RunDir(tmp_path).stage("attribution")
    rows, arrays = out.rows(), out.arrays()
    whole = attribution_consistency({"teacher": teacher, **students, **baselines}, data.inputs, data.labels, layers,
                                    data.masks, batch_size=BATCH)
    assert out.figures()["thresholds"] == whole.thresholds
    for name, values in whole.compared.items():
        mine = [r for r in rows if r["model"] == name]
        assert [r["index"] for r in mine] == list(range(N))
        for key, value in {**values, "stability": whole.stability[name],
                           "stability_adversarial": whole.stability_adversarial[name]}.items():
            written = torch.tensor([math.nan if r[key] is None else r[key] for r in mine], dtype=torch.float64)
            torch.testing.assert_close(written, value.double(), rtol=0, atol=0, equal_nan=True, msg=f"{name} {key}")
        assert [r["target"] for r in mine] == whole.targets.tolist()
        assert [r["correct"] for r in mine] == whole.correct[name].tolist()
    for name, maps in whole.maps.items():
        assert torch.equal(arrays[f"maps.{name}"], maps[:5]), name
    assert not out.file("parts").exists()  # the parts go once the stage is written
