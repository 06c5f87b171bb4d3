"""The language-model audit end to end: the tiny lab's models through `kdlens audit`, local checkpoints with
different tokenizers, the numbers recomputed independently from the saved traces, caching, and bad input."""

import json

import pytest
import torch
import yaml

from kdlens import audit
from kdlens.audit.lm.headline import LM_STUDENT_KEYS
from kdlens.io import read_json
from kdlens.probes import traces as T
from kdlens.rundir import RunDir
from kdlens.subjects import LanguageModel
from kdlens.tasks import babi, chains
from tests.audit.lm.labs import STUDENTS, lab_config
from tests.lab.test_lm import tiny
from tests.probes.test_lm_representations import char_lm


def test_every_student_has_every_key_and_the_data_comes_from_the_lab_recipe(audited):
    run_dir, results = audited
    assert results["data"]["task"] == "reasoning" and results["data"]["tasks"] == ["chains", "babi"]
    assert list(results["students"]) == STUDENTS
    for entry in results["students"].values():
        assert set(LM_STUDENT_KEYS) <= set(entry)
        assert entry["verdict"] in ("recommended", "acceptable", "at risk", "rejected")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["data"]["chains"]["max_steps"] == tiny().chains.max_steps  # the lab's task, not the default
    assert json.loads((run_dir / "results.json").read_text()) == results


def test_the_headline_numbers_recompute_from_the_saved_traces(audited):
    run_dir, results = audited
    config = tiny()
    questions = chains.make_split(config.chains, "test", 10) + babi.make_split(config.babi, "test", 10)
    texts = {n: [row["text"] for row in RunDir(run_dir).stage(f"generate-{n}").rows()]
             for n in ["teacher", *STUDENTS]}
    teacher = [(chains if isinstance(q, chains.ChainExample) else babi).check_trace(q, t)
               for q, t in zip(questions, texts["teacher"], strict=True)]
    for name in STUDENTS:
        checks = [(chains if isinstance(q, chains.ChainExample) else babi).check_trace(q, t)
                  for q, t in zip(questions, texts[name], strict=True)]
        entry = results["students"][name]
        assert entry["accuracy"] == pytest.approx(sum(c.answer_correct for c in checks) / len(checks))
        assert entry["trace_accuracy"] == pytest.approx(sum(c.trace_correct for c in checks) / len(checks))
        agree = [c.answer is not None and c.answer == t.answer for c, t in zip(checks, teacher, strict=True)]
        assert entry["agreement"] == pytest.approx(sum(agree) / len(agree))
        right = [c for c in checks if c.answer_correct]
        expected = sum(not c.trace_correct for c in right) / len(right) if right else None
        assert entry["right_for_wrong_reasons"] == (pytest.approx(expected) if right else None)
        counts = entry["contingency"]["overall"]["table"]["counts"]
        assert sum(map(sum, counts)) == len(questions)


def test_the_breakdown_by_steps_and_the_samples(audited):
    _, results = audited
    steps = results["breakdowns"]["steps"]
    assert set(steps) == {"chains", "babi"}
    assert steps["chains"]["difficulty"] == sorted(steps["chains"]["difficulty"])
    assert sum(steps["chains"]["n"]) == 10 and set(steps["chains"]["accuracy"]) == {"teacher", *STUDENTS}
    assert set(steps["chains"]["step_agreement"]) == set(STUDENTS)  # the teacher has no agreement with itself
    for name, kinds in results["samples"].items():
        for kind, items in kinds.items():
            assert len(items) <= 3 and all("sentences" in item["model"] for item in items), (name, kind)


def test_a_second_run_loads_every_stage(audited, recipe):
    run_dir, results = audited
    manifest = read_json(run_dir / "manifest.json")
    again = audit.run(lab_config(recipe, run_dir), progress=False)
    assert read_json(run_dir / "manifest.json") == manifest and again == results


def test_an_added_student_generates_only_its_own_traces(audited, recipe, tmp_path, monkeypatch):
    run_dir, _ = audited
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(run_dir, copy)
    generated = []
    original = T.generate_traces
    monkeypatch.setattr(T, "generate_traces", lambda model, *a, **k: generated.append(model.name) or
                        original(model, *a, **k))
    results = audit.run(lab_config(recipe, copy, students=[*STUDENTS, "token_rkl"]), progress=False)
    assert generated == ["token_rkl"] and "token_rkl" in results["students"]


def test_the_report_has_every_language_model_section_and_escapes_text(audited, tmp_path):
    import shutil

    from kdlens.report import render

    run_dir, _ = audited
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    results = read_json(copy / "results.json")
    kinds = results["samples"]["seq_kd"] or {"disagrees_with_teacher": []}
    hostile = "<script>alert(1)</script>"
    kind = next(iter(kinds))
    kinds[kind] = [{"index": 0, "task": "chains", "difficulty": 1, "prompt": hostile, "gold": "3",
                    "model": {"answer": hostile, "answer_correct": False, "trace_correct": False, "text": hostile,
                              "sentences": [{"text": hostile, "correct": False}]}, "teacher": None}]
    results["samples"]["seq_kd"] = kinds
    (copy / "results.json").write_text(json.dumps(results))
    html = render(copy).read_text()
    for section in ("summary", "fidelity", "contingency", "steps", "calibration", "representations", "samples"):
        assert f'id="{section}"' in html, section
    assert hostile not in html and "&lt;script&gt;" in html
    assert "P(CA | CT)" in html and "<svg" in html
    assert "| seq_kd |" in (copy / "summary.md").read_text()


def char_qwen(texts: list[str], seed: int) -> LanguageModel:
    """A character-level Qwen2: a tokenizer unlike the lab's word-level one."""
    return char_lm(seed, texts, "char")


def test_local_checkpoints_with_another_tokenizer(recipe, audited, tmp_path):
    """A teacher folder and a character-level student folder, loaded by the real loading code: everything that
    compares them works on text."""
    from kdlens.lab.lm import build

    lab = build(recipe["root"], tiny(students=[]), progress=False)
    questions = chains.make_split(tiny().chains, "test", 4)
    student = char_qwen([q.prompt + chains.write_trace(q, "teacher") for q in questions] + ["0123456789 ?.,;="],
                        seed=3)
    student.model.save_pretrained(tmp_path / "char")
    student.tokenizer.save_pretrained(tmp_path / "char")
    config = {"run_dir": str(tmp_path / "run"), "data": {"task": "reasoning", "chains": tiny().chains.model_dump(),
                                                         "babi": None, "n": 4},
              "teacher": {"checkpoint": str(lab.model_dirs["teacher"])},
              "students": {"char": {"checkpoint": str(tmp_path / "char")}},
              "probes": {"traces": {"max_new_tokens": 12}, "representations": {"n": 4}}}
    results = audit.run(config, progress=False)
    assert results["data"]["tasks"] == ["chains"] and results["data"]["splits"] == {"test": 4}
    assert results["students"]["char"]["cka_mean_best"] is not None
    cka = read_json(tmp_path / "run" / "stages" / "representations" / "figures.json")["students"]["char"]
    assert len(cka["student_layers"]) == 2  # embeddings + one layer, one row per word despite the tokenizer


def test_python_callers_pass_language_models(tmp_path):
    questions = chains.make_split(chains.ChainsConfig(max_steps=2), "test", 3)
    texts = [q.prompt + chains.write_trace(q, "teacher") for q in questions] + ["0123456789 ?.,;="]
    teacher, student = char_qwen(texts, 0), char_qwen(texts, 1)
    config = {"run_dir": str(tmp_path / "run"), "data": {"task": "reasoning", "babi": None, "n": 3,
                                                         "chains": {"max_steps": 2}},
              "probes": {"traces": {"max_new_tokens": 8}, "calibration": {"enabled": False},
                         "representations": {"enabled": False}}}
    results = audit.run(config, teacher=teacher, students={"mine": student}, progress=False)
    entry = results["students"]["mine"]
    assert entry["ece"] is None and entry["cka_mean_best"] is None  # probes off: null, never a number
    assert not (tmp_path / "run" / "stages" / "calibration").exists()


# -- bad input: one test each ---------------------------------------------------------------------------------------


def test_a_missing_checkpoint_folder_is_named(tmp_path):
    config = {"run_dir": str(tmp_path / "run"), "data": {"task": "reasoning", "n": 2},
              "teacher": {"checkpoint": str(tmp_path / "nowhere")}, "students": {"s": {"checkpoint": str(tmp_path)}}}
    with pytest.raises(FileNotFoundError, match="nowhere.*no such folder"):
        audit.run(config, progress=False)


def test_an_unknown_lab_model_suggests_the_right_one(tmp_path):
    config = {"run_dir": str(tmp_path / "run"), "data": {"task": "reasoning"}, "teacher": {"lab": "lm"},
              "students": {"s": {"lab": "lm", "lab_model": "seq_kdd"}}}
    with pytest.raises(ValueError, match="Did you mean 'seq_kd'"):
        audit.run(config, progress=False)


def test_a_typo_in_the_probes_suggests_the_key(tmp_path):
    config = {"run_dir": str(tmp_path), "data": {"task": "reasoning"}, "probes": {"trace": {}}}
    with pytest.raises(ValueError, match="Did you mean 'traces'"):
        audit.run(config, progress=False)


def test_a_classifier_probe_in_a_language_model_audit_is_an_error(tmp_path):
    config = {"run_dir": str(tmp_path), "data": {"task": "reasoning"}, "probes": {"attribution": {}}}
    with pytest.raises(ValueError, match="attribution"):
        audit.run(config, progress=False)


def test_no_task_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="at least one task"):
        audit.run({"run_dir": str(tmp_path), "data": {"task": "reasoning", "chains": None, "babi": None}})


def test_a_module_instead_of_a_language_model_is_a_type_error(tmp_path):
    config = {"run_dir": str(tmp_path), "data": {"task": "reasoning"}}
    with pytest.raises(TypeError, match="LanguageModel"):
        audit.run(config, teacher=torch.nn.Linear(2, 2), students={"s": torch.nn.Linear(2, 2)}, progress=False)


def test_baselines_are_refused_for_language_models(tmp_path):
    with pytest.raises(ValueError, match="no baselines"):
        audit.run({"run_dir": str(tmp_path), "data": {"task": "reasoning"}}, baselines={"b": object()})


def test_a_student_named_teacher_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="'teacher' names the teacher"):
        audit.run({"run_dir": str(tmp_path), "data": {"task": "reasoning"}, "teacher": {"lab": "lm"},
                   "students": {"teacher": {"lab": "lm"}}})


def test_no_student_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="at least one student"):
        audit.run({"run_dir": str(tmp_path), "data": {"task": "reasoning"}, "teacher": {"lab": "lm"}})


def test_a_name_that_cannot_be_a_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="letters, digits.*'my_student'"):
        audit.run({"run_dir": str(tmp_path), "data": {"task": "reasoning"}, "teacher": {"lab": "lm"},
                   "students": {"my/student": {"lab": "lm"}}})


def test_the_language_model_page_in_a_real_browser(audited, tmp_path):
    from kdlens.report import render
    from kdlens.report.lm import SECTIONS
    from tests.report.browser import check_page, require_browser

    require_browser()
    run_dir, _ = audited
    seen = check_page(render(run_dir), tmp_path / "lm.png")
    assert seen["console_errors"] == [] and seen["page_errors"] == [] and seen["requests"] == []
    assert seen["section_ids"] == list(SECTIONS)


def test_the_command_audits_a_language_model_config_and_writes_the_report(audited, recipe, tmp_path):
    from typer.testing import CliRunner

    from kdlens.cli import app

    run_dir, _ = audited
    path = tmp_path / "audit_lm.yaml"
    path.write_text(yaml.safe_dump(lab_config(recipe, run_dir)))
    result = CliRunner().invoke(app, ["audit", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "BLEU" in result.output and "seq_kd" in result.output and (run_dir / "report.html").is_file()
    path.write_text(yaml.safe_dump({**lab_config(recipe, run_dir), "sample": 2}))
    result = CliRunner().invoke(app, ["audit", str(path), "--quiet"])
    assert result.exit_code == 2 and "samples" in result.output  # a typo: the right key is suggested


def test_a_killed_generation_resumes_after_its_last_saved_chunk(tmp_path, monkeypatch):
    from kdlens.audit.lm import stages as audit_lm
    from kdlens.io import read_json as read
    from kdlens.rundir import RunDir
    from kdlens.stages import StageRunner

    questions = chains.make_split(chains.ChainsConfig(max_steps=2), "test", 10)
    model = char_lm(texts=[q.prompt for q in questions] + [chains.write_trace(q) for q in questions])
    settings = {"max_new_tokens": 12, "batch_size": 2, "decoding": "greedy"}
    monkeypatch.setattr(audit_lm, "GENERATION_CHUNK", 2)  # 4 questions a chunk: chunks at 0, 4, 8
    monkeypatch.setattr("kdlens.stages.MIN_SHARDS", 1)  # the chunk size alone sets the shards

    def texts(run_dir, say=None):
        run = RunDir(run_dir)
        with StageRunner(run, progress=False, on_say=say) as runner:
            runner.run(audit_lm.generation_stage("m", model, questions, settings))
        return audit_lm.generated(run, "m")

    expected = texts(tmp_path / "whole")
    starts, original = [], T.generate_traces

    def killed_at_the_second_chunk(model, chunk, **kwargs):
        starts.append(questions.index(chunk[0]))
        if len(starts) == 2:
            raise KeyboardInterrupt
        return original(model, chunk, **kwargs)

    monkeypatch.setattr(T, "generate_traces", killed_at_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        texts(tmp_path / "run")
    parts = tmp_path / "run" / "stages" / "generate-m" / "parts"
    (parts / ".00001.json.x1y2.tmp").write_text('{"texts": ["torn')  # a kill in the middle of the next write
    said = []
    assert texts(tmp_path / "run", say=said.append) == expected and starts == [0, 4, 4, 8]
    assert said == ["m: 4/10 traces", "m: 8/10 traces"] and not parts.exists()
    assert read(tmp_path / "run" / "manifest.json")["stages"]["generate-m"]["done"]


def test_a_template_puts_solved_train_questions_of_the_same_task_before_each_question():
    from kdlens.audit.lm.config import ReasoningAuditData
    from kdlens.audit.lm.data import load_questions, prompted

    data = ReasoningAuditData(n=3, few_shot=2, prompt_template="Solve it.\n{examples}Q: {question}")
    plain = load_questions(ReasoningAuditData(n=3))
    questions = prompted(data, load_questions(data), {"teacher": None})["teacher"]
    for task, shots in (("chains", chains.make_split(data.chains, "train", 2)),
                        ("babi", babi.make_split(data.babi, "train", 2))):
        module = chains if task == "chains" else babi
        block = "".join(f"{e.prompt} {module.write_trace(e)}\n" for e in shots)
        mine = [(q, p) for q, p in zip(questions, plain, strict=True) if T.task_name(q) == task]
        assert len(mine) == 3
        for q, p in mine:
            assert q.prompt == f"Solve it.\n{block}Q: {p.prompt}"
            assert (q.answer, q.steps, q.difficulty) == (p.answer, p.steps, p.difficulty)


def test_few_shot_audits_cut_each_trace_at_a_newline(recipe, tmp_path, monkeypatch):
    seen = []
    original = T.generate_traces
    monkeypatch.setattr(T, "generate_traces", lambda model, chunk, **k: seen.append(k["stop"]) or
                        original(model, chunk, **k))
    config = lab_config(recipe, tmp_path / "run", students=["seq_kd"])
    config["data"] |= {"n": 2, "few_shot": 1, "prompt_template": "{examples}{question}"}
    results = audit.run(config, progress=False)
    assert set(seen) == {"\n"} and results["students"]["seq_kd"]["accuracy"] is not None
    rows = [json.loads(line) for line in (tmp_path / "run" / "stages" / "traces" / "rows.jsonl").open()]
    bare = [q.prompt for q in chains.make_split(tiny().chains, "test", 2)]
    assert [r["question"] for r in rows[:2]] == bare and rows[0]["prompt"].endswith(bare[0])
    assert rows[0]["prompt"] != bare[0]  # the model saw the solved example first
    shown = [item["prompt"] for kinds in results["samples"].values() for items in kinds.values() for item in items]
    assert shown and all("\n" not in prompt for prompt in shown)
    config["probes"]["traces"]["stop"] = " ."  # given: it wins
    seen.clear()
    audit.run({**config, "run_dir": str(tmp_path / "run2")}, progress=False)
    assert set(seen) == {" ."}


@pytest.mark.parametrize(("data", "message"), [
    ({"prompt_template": "Answer:"}, "must contain {question}"),
    ({"prompt_template": "{question} {shots}"}, r"\{question\} and \{examples\} only, but got \{shots\}"),
    ({"few_shot": 2}, "few_shot is 2 but prompt_template has no {examples}"),
    ({"prompt_template": "{examples}{question}"}, "few_shot is 0 but prompt_template has {examples}"),
    ({"prompt_template": "{question} {"}, "not a format string.*write {{ and }}"),
    ({"few_shot": -1}, "few_shot"),
])
def test_a_bad_prompt_template_is_named_with_the_fix(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        audit.run({"run_dir": str(tmp_path), "data": {"task": "reasoning", **data}, "teacher": {"lab": "lm"},
                   "students": {"s": {"lab": "lm"}}}, progress=False)
