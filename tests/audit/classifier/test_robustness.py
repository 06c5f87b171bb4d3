"""The robustness stage sharded: the same files however its examples are split into shards and processes."""

import pytest
import torch
from torch import nn

from kdlens.audit.classifier import outputs as outputs_stages
from kdlens.audit.classifier import robustness as robustness_stages
from kdlens.io import load_tensors
from kdlens.probes.robustness import adversarial_agreement, counterfactual_flips, pgd, predictions
from kdlens.rundir import RunDir
from kdlens.tasks.files import EvalSplit
from kdlens.tasks.shapes import ShapesConfig, make_split, other_cues, with_cues
from tests.audit.classifier import map_in_shares, run_in_shares, written_across_shardings

N, BATCH, EPSILON = 22, 4, 16 / 255  # shards of 1 batch: 6 (the last of 2 examples); of 3 batches: 2 (12 and 10)
EPSILONS = [4 / 255, EPSILON, 32 / 255]


class Wiggly(nn.Module):
    """Logits of ``sin(50 x)``: under attack its answer on about half the examples depends on where PGD starts, so a
    start that moved with the sharding would show in the files (smooth nets land on the same answers)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.head = nn.Linear(3 * 16 * 16, 4)

    def forward(self, x):
        return self.head(torch.sin(50 * x).flatten(1))  # (B, 4)


@pytest.fixture(scope="module")
def setup():
    test = make_split(ShapesConfig(image_size=16, cue_size=3), "test", N)
    edited = other_cues(test, seed=1)
    data = EvalSplit(test.images, test.labels, counterfactuals=with_cues(test, edited).images,
                     counterfactual_targets=edited)
    return Wiggly(0).eval(), {"small": Wiggly(1).eval(), "other": Wiggly(2).eval()}, data


def build(setup):
    teacher, students, data = setup
    return robustness_stages.robustness_stage(teacher, students, data, epsilon=EPSILON, steps=3, seed=5,
                                              epsilons=EPSILONS, batch_size=BATCH)


def files(run_dir) -> tuple:
    folder = run_dir / "stages" / "robustness"
    return (folder / "figures.json").read_bytes(), (folder / "rows.jsonl").read_bytes()


def test_the_files_are_the_same_however_the_examples_are_sharded(setup, tmp_path, monkeypatch):
    written = written_across_shardings(lambda: build(setup), files, tmp_path, monkeypatch)
    assert written[1] == written[3] == written[1000]
    figures = RunDir(tmp_path / "3").stage("robustness").figures()
    assert figures["curve"]["epsilons"] == EPSILONS and len(figures["curve"]["accuracy"]["teacher"]) == 3
    assert figures["curve"]["accuracy"]["small"][1] == figures["models"]["small"]["student_correct"]["mean"]


def test_saved_parts_hold_what_reduce_needs(setup, tmp_path, monkeypatch):
    """Each shard's part is a safetensors file of its examples' tensors, and the run that reads them back writes
    the values the probes give on the whole split at once, from the same random start."""
    monkeypatch.setattr(outputs_stages, "SHARD_BATCHES", 1)
    monkeypatch.setattr("kdlens.stages.MIN_SHARDS", 1)  # the chunk size alone sets the shards
    teacher, students, data = setup
    stage = build(setup)
    parts = map_in_shares(tmp_path, stage, 3)
    assert [p.suffix for p in parts] == [".safetensors"] * len(stage.shards)
    assert {tuple(t.shape) for t in load_tensors(parts[-1]).values()} == {(2,)}  # examples 20-22, 0/1 values
    run_in_shares(tmp_path, stage, 3)
    out = RunDir(tmp_path).stage("robustness")
    rows, figures = out.rows(), out.figures()
    attack = {"steps": 3, "seed": 5, "batch_size": BATCH}
    on_teacher = pgd(teacher, data.inputs, data.labels, EPSILON, **attack)
    assert figures["teacher_robust_accuracy"] == float(
        (predictions(teacher, on_teacher, BATCH) == data.labels).double().mean())
    for name, student in students.items():
        whole = {**adversarial_agreement(teacher, student, data.inputs, data.labels, EPSILON, **attack),
                 **counterfactual_flips(teacher, student, data.inputs, data.counterfactuals,
                                        data.counterfactual_targets, batch_size=BATCH)}
        mine = [r for r in rows if r["model"] == name]
        assert [r["index"] for r in mine] == list(range(N))
        for key, values in whole.items():
            assert [r[key] for r in mine] == values.tolist(), (name, key)
    assert not out.file("parts").exists()
