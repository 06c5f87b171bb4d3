"""The language-model audit's sharded calibration and representations stages: the same files whatever the chunk
size, whether the shards run in one process or in ``--shard`` shares (their states saved and read back), against
the one-shot probes, and their bad input."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kdlens.audit.lm import stages as S
from kdlens.distributed import World
from kdlens.probes import traces as T
from kdlens.probes.lm_representations import layer_cka, word_states
from kdlens.rundir import RunDir, StageOutput
from kdlens.stages import Stage, StageRunner, run_stage
from kdlens.subjects import word_spans
from kdlens.tasks import babi, chains
from tests.probes.test_lm_representations import char_lm
from tests.probes.test_traces import gold, tiny_lm

QUESTIONS = chains.make_split(chains.ChainsConfig(max_steps=3), "test", 8) + babi.make_split(None, "test", 6)


@pytest.fixture(scope="module")
def models():
    teacher = tiny_lm(QUESTIONS)
    chars = char_lm(2, [q.prompt for q in QUESTIONS] + gold(QUESTIONS) + ["? ."], "chars")  # another tokenizer
    return {"teacher": teacher, "chars": chars}


def traced(run_dir: Path) -> RunDir:
    """A run directory whose ``traces`` stage holds hand-written traces: the teacher's gold ones, and for the student
    right ones, wrong ones and ones without an answer (all of questions 3 to 5: a batch with nothing to score)."""
    student = ["? ?" if 3 <= i <= 5 else " the answer is 1 ." if i % 4 == 1 else " " + t
               for i, t in enumerate(gold(QUESTIONS))]
    rows = [{"model": "teacher", "text": " " + t} for t in gold(QUESTIONS)]
    rows += [{"model": "chars", "text": t} for t in student]
    run = RunDir(run_dir)
    run_stage(run, Stage("traces", {"rows": rows}, compute=lambda _: StageOutput(rows=rows)))
    return run


def in_shares(run: RunDir, stage: Stage, shares: int) -> None:
    """Map ``stage``'s shards in ``shares`` ``--shard`` shares (as other processes would: each state saved to disk),
    then reduce them in a run that maps nothing itself."""
    for rank in range(shares):
        with StageRunner(run, [stage.name], progress=False, world=World.shard(f"{rank}/{shares}")) as share:
            share.run(stage)
    with StageRunner(run, [stage.name], progress=False) as runner:
        runner.run(stage)
    assert runner.mapped[stage.name] == 0  # every state was read back from its saved part


def files(run: RunDir, name: str) -> tuple[dict, list[dict], int]:
    """The stage's figures, rows and number of shards."""
    shards = run.manifest()["stages"][name]["shards"]
    return run.stage(name).figures(), run.stage(name).rows(), len(shards)


def across_chunks(constant: str, layouts, build, tmp_path, monkeypatch) -> dict[int, tuple]:
    """:func:`files` of the stage ``build(run)`` on a fresh :func:`traced` run per (chunk, shares) layout (shares 0:
    one process), with ``S.<constant>`` set to the chunk; keyed by chunk."""
    seen = {}
    for chunk, shares in layouts:
        monkeypatch.setattr(S, constant, chunk)
        monkeypatch.setattr("kdlens.stages.MIN_SHARDS", 1)  # the chunk size alone sets the shards
        run = traced(tmp_path / f"chunk{chunk}")
        stage = build(run)
        in_shares(run, stage, shares) if shares else run_stage(run, stage)
        seen[chunk] = files(run, stage.name)
    return seen


def test_calibration_is_exactly_the_same_whatever_the_chunks(models, tmp_path, monkeypatch):
    questions = {name: QUESTIONS for name in models}
    seen = across_chunks("CALIBRATION_CHUNK", ((1, 0), (2, 2), (100, 0)),  # 3 a batch: 5 shards (the last 2), 3, 1
                         lambda run: S.calibration_stage(run, models, questions, n_bins=5, batch_size=3),
                         tmp_path, monkeypatch)
    run = RunDir(tmp_path / "chunk100")
    assert [n for _, _, n in seen.values()] == [5, 3, 1]
    figures, rows, _ = seen[1]
    for chunk in (2, 100):
        assert seen[chunk][:2] == (figures, rows), chunk  # exactly: each batch is scored alike in every layout
    student = figures["models"]["chars"]
    assert student["n"] == len(QUESTIONS) and student["n_scored"] == len(QUESTIONS) - 3
    assert [r["confidence"] is None for r in rows if r["model"] == "chars"][3:6] == [True] * 3
    texts = S.traced_texts(run)
    whole = T.answer_calibration(models["chars"], QUESTIONS, texts["chars"], n_bins=5, batch_size=3)
    assert (student["n_scored"], student["accuracy"]) == (whole["n_scored"], whole["accuracy"])
    assert student["ece"] == pytest.approx(whole["ece"], rel=1e-5)  # one-shot: other batches, float32 rounding
    confidence = T.answer_confidence(models["teacher"], QUESTIONS[3:6], texts["teacher"][3:6], batch_size=3)
    assert [r["confidence"] for r in rows if r["model"] == "teacher"][3:6] == confidence.tolist()  # batch 2 as is


def test_representations_are_the_same_whatever_the_chunks(models, tmp_path, monkeypatch):
    seen = across_chunks("REPRESENTATIONS_CHUNK", ((1, 0), (3, 2), (100, 0)),  # 11 texts, 2 a batch: 6 shards, 2, 1
                         lambda run: S.representations_stage(run, models, QUESTIONS, n=11, batch_size=2),
                         tmp_path, monkeypatch)
    assert [n for _, _, n in seen.values()] == [6, 2, 1]
    figures = seen[1][0]
    for chunk in (3, 100):
        assert seen[chunk][0] == figures, chunk  # exactly: the same pooled words, one CKA over them all
    assert sorted(figures) == ["debiased", "kernel", "n", "pool_note", "students", "teacher_layers"]
    teacher = S.traced_texts(RunDir(tmp_path / "chunk100"))["teacher"]
    texts = [q.prompt + t for q, t in zip(QUESTIONS[:11], teacher[:11], strict=True)]
    entry = figures["students"]["chars"]
    assert figures["n"] == 11 and entry["n_words"] == sum(len(word_spans(t)) for t in texts)
    assert figures["teacher_layers"] == entry["teacher_layers"] == ["embed", "layers.0"]
    assert entry["student_layers"] == ["embed", "layers.0"]
    assert entry == layer_cka(models["teacher"], models["chars"], texts, batch_size=2)  # exactly the one pass
    assert entry["cka_mean_best"] == pytest.approx(
        sum(max(row[j] for row in entry["cka"]) for j in range(2)) / 2, rel=1e-12)
    assert not math.isnan(entry["cka_mean_best"])


def test_a_representations_shard_holds_each_models_pooled_words(models, tmp_path, monkeypatch):
    monkeypatch.setattr(S, "REPRESENTATIONS_CHUNK", 3)
    monkeypatch.setattr("kdlens.stages.MIN_SHARDS", 1)  # the chunk size alone sets the shards
    run = traced(tmp_path / "run")
    stage = S.representations_stage(run, models, QUESTIONS, n=11, batch_size=2)
    state = stage.map(stage.shards[1], run.stage("representations"))  # texts 6 to 10
    texts = [q.prompt + t for q, t in zip(QUESTIONS[6:11], S.traced_texts(run)["teacher"][6:11], strict=True)]
    words = sum(len(word_spans(t)) for t in texts)
    assert sorted(state) == ["chars.0", "chars.1", "teacher.0", "teacher.1"]
    assert all(v.shape == (words, 16) and v.dtype == torch.float64 for v in state.values())  # 16 wide, both models
    assert torch.equal(state["chars.1"], word_states(models["chars"], texts, 2)["layers.0"])


def test_representations_of_fewer_than_two_words_are_a_clear_error(models, tmp_path):
    rows = [{"model": "teacher", "text": ""}, {"model": "chars", "text": ""}]
    run = RunDir(tmp_path / "run")
    run_stage(run, Stage("traces", {"rows": rows}, compute=lambda _: StageOutput(rows=rows)))
    stage = S.representations_stage(run, models, [SimpleNamespace(prompt="mary")], batch_size=2)  # one word
    with pytest.raises(ValueError, match="Expected `texts` to .*at least 2 words in all, but got 1"):
        run_stage(run, stage)
