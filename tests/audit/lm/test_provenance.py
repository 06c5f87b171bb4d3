"""The language-model audit's provenance stages (issue 17): every sentence of each distilled student's traces scored
under the teacher, the original student and itself, exactly as the probe scores it, the same whatever the shards;
categories and shares that recompute from the rows; a new threshold re-reads the scores; a killed scoring stage
resumes; the report colours each sentence and escapes it; and bad input."""

import json
import shutil

import pytest
import torch

from kdlens import audit
from kdlens.audit.lm import provenance as AP
from kdlens.audit.lm.config import ProvenanceProbe
from kdlens.io import read_json
from kdlens.lab import lm
from kdlens.probes import provenance as P
from kdlens.rundir import RunDir, StageOutput, file_record
from kdlens.stages import Stage, StageRunner, run_stage
from kdlens.tasks import babi, chains
from tests.audit.lm.labs import STUDENTS, lab_config
from tests.audit.lm.test_stages import QUESTIONS, in_shares
from tests.lab.test_lm import tiny
from tests.probes.test_lm_representations import char_lm
from tests.probes.test_provenance import naive
from tests.probes.test_traces import gold, tiny_lm

DISTILLED = [n for n in STUDENTS if n != "base_student"]


def test_each_sentence_is_scored_by_the_three_models_on_the_distilled_students_trace(audited, recipe):
    run_dir, _ = audited
    run = RunDir(run_dir)
    config = tiny()
    questions = chains.make_split(config.chains, "test", 10) + babi.make_split(config.babi, "test", 10)
    lab = lm.build(recipe["root"], config, progress=False)
    rows = run.stage("provenance-scores").rows()
    assert sorted({r["model"] for r in rows}) == sorted(DISTILLED) and len(rows) == len(DISTILLED) * 20
    for name in DISTILLED:
        texts = [r["text"] for r in run.stage(f"generate-{name}").rows()]
        mine = [r for r in rows if r["model"] == name]
        assert [r["spans"] for r in mine] == [[list(s) for s in P.segment(t)] for t in texts]
        kept = [r for r in mine if r["scored"]]
        assert kept and all(r["why"] == "no sentence" for r in mine if not r["scored"])
        for role, model in (("teacher", "teacher"), ("student", "base_student"), ("distilled", name)):
            expected = P.sentence_probabilities(lab.model(model), [questions[r["index"]].prompt for r in kept],
                                                [texts[r["index"]] for r in kept],
                                                [[tuple(s) for s in r["spans"]] for r in kept], batch_size=16)
            assert [r[f"p_{role}"] for r in kept] == [p.tolist() for p in expected], (name, role)


def test_one_pass_equals_re_scoring_each_sentence_on_the_lab_models(audited, recipe):
    run_dir, _ = audited
    lab = lm.build(recipe["root"], tiny(), progress=False)
    questions = chains.make_split(tiny().chains, "test", 10) + babi.make_split(tiny().babi, "test", 10)
    rows = [r for r in RunDir(run_dir).stage("provenance-scores").rows() if r["model"] == "seq_kd" and r["scored"]]
    texts = [r["text"] for r in RunDir(run_dir).stage("generate-seq_kd").rows()]
    for name in ("teacher", "base_student", "seq_kd"):
        model = lab.model(name)
        for row in rows[:6]:
            prompt, text, spans = questions[row["index"]].prompt, texts[row["index"]], [tuple(s) for s in row["spans"]]
            (ours,) = P.sentence_probabilities(model, [prompt], [text], [spans])
            assert ours.tolist() == pytest.approx(naive(model, prompt, text, spans), rel=1e-5), name


def test_the_categories_and_shares_recompute_from_the_scores(audited):
    run_dir, results = audited
    run = RunDir(run_dir)
    scores = {(r["model"], r["index"]): r for r in run.stage("provenance-scores").rows()}
    figures = run.stage("provenance").figures()
    assert figures["original_student"] == "base_student" and list(figures["students"]) == DISTILLED
    for name in DISTILLED:
        rows = [r for r in run.stage("provenance").rows() if r["model"] == name]
        found = []
        for row in rows:
            score = scores[(name, row["index"])]
            p = [torch.tensor(score[f"p_{role}"], dtype=torch.float64) for role in AP.ROLES]
            assert [s["category"] for s in row["sentences"]] == P.categorize(*p, P.ALPHA, P.BETA)
            found += [s["category"] for s in row["sentences"] if s["category"] is not None]
        overall = figures["students"][name]["overall"]
        assert overall["n_sentences"] == len(found)
        for k in P.CATEGORIES:
            assert overall[k]["share"] == pytest.approx(found.count(k) / len(found))
            assert overall[k]["low"] <= overall[k]["share"] <= overall[k]["high"]
        section = results["provenance"]["students"][name]
        assert section["overall"] == overall and set(section["by_correctness"]) <= {"right", "wrong"}
        assert set(section["by_position"]) == {"first", "middle", "last"}
        assert "sensitivity" in figures["students"][name] and "sensitivity" not in section  # the grid stays there


def test_a_new_alpha_re_reads_the_scores(audited, recipe, tmp_path):
    run_dir, _ = audited
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = read_json(copy / "manifest.json")["stages"]
    config = lab_config(recipe, copy)
    config["probes"]["provenance"]["alpha"] = 0.2
    results = audit.run(config, progress=False)
    after = read_json(copy / "manifest.json")["stages"]
    assert after["provenance-scores"] == before["provenance-scores"]  # not scored again
    assert after["provenance"]["inputs"] != before["provenance"]["inputs"] and results["provenance"]["alpha"] == 0.2


def test_turning_provenance_off_drops_it_from_the_results(audited, recipe, tmp_path):
    run_dir, _ = audited
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    config = lab_config(recipe, copy)
    del config["probes"]["provenance"]
    results = audit.run(config, progress=False)
    assert results["provenance"] is None and "provenance" not in read_json(copy / "manifest.json")["stages"]


def test_the_report_colours_each_sentence_by_category_and_escapes_it(audited, tmp_path):
    from kdlens.report import render

    run_dir, _ = audited
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    rows = RunDir(copy).stage("provenance").rows()
    hostile = '<script>alert(1)</script>" onmouseover="x'
    rows[0]["sentences"][0]["text"] = hostile
    rows[0]["sentences"][0]["category"] = "teacher"
    path = copy / "stages" / "provenance" / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = RunDir(copy)
    manifest = run.manifest()
    manifest["stages"]["provenance"]["files"]["rows.jsonl"] = file_record(path)  # as if the audit wrote it
    run.save_manifest(manifest)
    html = render(copy).read_text()
    assert 'id="provenance"' in html and 'class="prov-teacher" title="teacher · p_T' in html
    assert hostile not in html and "&lt;script&gt;alert(1)&lt;/script&gt;&#34; onmouseover=&#34;x" in html
    assert "by third of the trace" in html and "shares as alpha moves" in html


# --- the stages on hand-written traces: two tokenizers, shards, resumption, bad input ---

@pytest.fixture(scope="module")
def models():
    """The teacher and the original student read words; the distilled student ``chars`` reads characters."""
    teacher = tiny_lm(QUESTIONS)
    chars = char_lm(2, [q.prompt for q in QUESTIONS] + gold(QUESTIONS) + ["? ."], "chars")
    return {"teacher": teacher, "base": tiny_lm(QUESTIONS), "chars": chars}


def traced(run_dir, long: bool = False) -> RunDir:
    """A run directory whose ``traces`` stage holds the gold traces for the teacher and the base student, and for
    ``chars`` two-sentence traces, one without a sentence (question 3) and, with ``long``, one longer than the
    character model's context (question 4)."""
    student = [" " + t + " so that is it ." for t in gold(QUESTIONS)]
    student[3] = " ? ;"
    if long:
        student[4] = " a is 1 ." * 200
    rows = [{"model": m, "index": i, "text": " " + t, "task": "chains", "difficulty": 1, "answer_correct": True}
            for m in ("teacher", "base") for i, t in enumerate(gold(QUESTIONS))]
    rows += [{"model": "chars", "index": i, "text": t, "task": "babi" if i % 2 else "chains", "difficulty": i % 3,
              "answer_correct": i % 3 != 0} for i, t in enumerate(student)]
    run = RunDir(run_dir)
    run_stage(run, Stage("traces", {"rows": rows}, compute=lambda _: StageOutput(rows=rows)))
    return run


def scores(run: RunDir, models: dict, **settings) -> Stage:
    settings = ProvenanceProbe(original_student="base", batch_size=3, **settings)
    return AP.scores_stage(run, models, {name: QUESTIONS for name in models}, settings)


def test_the_scores_are_the_same_whatever_the_shards(models, tmp_path, monkeypatch):
    monkeypatch.setattr("kdlens.stages.MIN_SHARDS", 1)
    seen = []
    for chunk, shares in ((1, 0), (2, 2), (100, 0)):
        monkeypatch.setattr(AP, "PROVENANCE_CHUNK", chunk)
        run = traced(tmp_path / f"chunk{chunk}")
        stage = scores(run, models)
        in_shares(run, stage, shares) if shares else run_stage(run, stage)
        seen.append((run.stage(stage.name).rows(), len(run.manifest()["stages"][stage.name]["shards"])))
    assert [n for _, n in seen] == [5, 3, 1]  # 14 questions, 3 a batch
    assert seen[1][0] == seen[0][0] and seen[2][0] == seen[0][0]
    rows = seen[0][0]
    assert [r["model"] for r in rows] == ["chars"] * len(QUESTIONS)  # the one distilled student
    assert rows[3] == {"model": "chars", "index": 3, "spans": [], "scored": False, "why": "no sentence"}
    texts = [r["text"] for r in RunDir(tmp_path / "chunk1").stage("traces").rows() if r["model"] == "chars"]
    expected = P.sentence_probabilities(models["chars"], [q.prompt for q in QUESTIONS[5:7]], texts[5:7],
                                        [P.segment(t) for t in texts[5:7]], batch_size=3)
    assert [rows[i]["p_distilled"] for i in (5, 6)] == [p.tolist() for p in expected]  # batch 2 as scored alone


def test_a_trace_longer_than_a_models_context_is_not_scored_and_says_so(models, tmp_path):
    run = traced(tmp_path / "run", long=True)
    run_stage(run, scores(run, models))
    row = run.stage("provenance-scores").rows()[4]
    assert row["scored"] is False and row["why"] == "longer than a model's context"
    run_stage(run, AP.shares_stage(run, ProvenanceProbe(original_student="base", n_resamples=100), {}))
    figures = run.stage("provenance").figures()["students"]["chars"]
    assert figures["not_scored"] == {"no sentence": 1, "longer than a model's context": 1}
    assert figures["n_scored"] == len(QUESTIONS) - 2
    assert set(figures["by_task"]) == {"chains", "babi"} and set(figures["by_difficulty"]) == {"0", "1", "2"}


def test_a_killed_scoring_stage_resumes_after_its_last_saved_shard(models, tmp_path, monkeypatch):
    monkeypatch.setattr("kdlens.stages.MIN_SHARDS", 1)
    monkeypatch.setattr(AP, "PROVENANCE_CHUNK", 1)
    run = traced(tmp_path / "run")
    calls, original = [], P.sentence_probabilities

    def dies_on_the_third_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:  # three models a shard: the third shard's first model
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(P, "sentence_probabilities", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        run_stage(run, scores(run, models))
    monkeypatch.setattr(P, "sentence_probabilities", original)
    with StageRunner(run, ["provenance-scores"], progress=False) as runner:
        runner.run(scores(run, models))
    assert runner.mapped["provenance-scores"] == 3  # shards 3 to 5; the first two were read back
    whole = traced(tmp_path / "whole")
    run_stage(whole, scores(whole, models))
    assert run.stage("provenance-scores").rows() == whole.stage("provenance-scores").rows()


def test_the_original_student_must_be_a_student(recipe, tmp_path):
    config = lab_config(recipe, tmp_path / "run")
    config["probes"]["provenance"]["original_student"] = "base_studnet"
    with pytest.raises(ValueError, match=r"original_student is 'base_studnet', which is none of the students "
                                         r"\(base_student, seq_kd, token_fkl_t2\)\. Did you mean 'base_student'\?"):
        audit.run(config, progress=False)


def test_the_original_student_alone_leaves_nothing_to_trace(recipe, tmp_path):
    config = lab_config(recipe, tmp_path / "run", students=["base_student"])
    config["probes"]["provenance"] = {"original_student": "base_student"}
    with pytest.raises(ValueError, match="the only student: .* add at least one more student"):
        audit.run(config, progress=False)


def test_python_callers_name_the_original_student_among_theirs(models, tmp_path):
    config = {"run_dir": str(tmp_path / "run"), "data": {"task": "reasoning", "n": 2},
              "probes": {"provenance": {"original_student": "base"}}}
    with pytest.raises(ValueError, match=r"none of the students \(chars\)"):
        audit.run(config, teacher=models["teacher"], students={"chars": models["chars"]}, progress=False)


@pytest.mark.parametrize("probe, message", [
    ({"alpha": 1.5}, "less than or equal to 1"),
    ({"alphas": [0.1, -0.2]}, r"in \[0, 1\], but got -0.2"),
    ({"per": "word"}, "'token' or 'character'"),
    ({"segmentation": {"think": ["<think>", ""]}}, "two non-empty strings"),
    ({"segmentation": {"terminators": ""}}, "at least 1 character"),
])
def test_bad_provenance_settings_are_named(recipe, tmp_path, probe, message):
    config = lab_config(recipe, tmp_path / "run")
    config["probes"]["provenance"].update(probe)
    with pytest.raises(ValueError, match=message):
        audit.run(config, progress=False)
