"""The language-model audit on your own question file: local checkpoints (character-level, random weights) through
`kdlens audit`, numbers recomputed from the saved traces, breakdowns by difficulty and category, chat templates,
few-shot rows held out, and bad files named before any model loads."""

import json

import pytest

from kdlens import audit
from kdlens.audit.lm.config import AnswerSettings
from kdlens.audit.lm.data import examples
from kdlens.probes import traces as T
from kdlens.report import render
from kdlens.rundir import RunDir
from kdlens.tasks.questions import load_questions
from tests.probes.test_lm_representations import char_lm
from tests.subjects.test_chat import TEMPLATE

ROWS = [
    {"question": "Tom has 5 apples and buys 3. How many?", "answer": "8", "solution": "5 + 3 = 8.",
     "difficulty": 1, "category": "word_problem"},
    {"question": "What is 7 + 6?", "answer": "13", "difficulty": 1, "category": "arithmetic"},
    {"question": "Ann has 10, gives 4, then gets 2. How many?", "answer": "8", "solution": "10 - 4 = 6. 6 + 2 = 8.",
     "difficulty": 2, "category": "word_problem"},
    {"question": "Mary went to the kitchen. Where is Mary?", "answer": "kitchen", "difficulty": 1,
     "category": "where_is"},
    {"question": "What is 9 - 2?", "answer": "7", "difficulty": 1, "category": "arithmetic"},
    {"question": "John went to the garden. Where is John?", "answer": "garden", "difficulty": 1,
     "category": "where_is"},
]
ALPHABET = "".join(json.dumps(r) for r in ROWS) + " The answer is 0123456789.:\nQuestion Answer user assistant"


def folders(root, chat: bool = False) -> dict:
    sources = {}
    for name, seed in (("teacher", 0), ("student", 1)):
        lm = char_lm(seed, [ALPHABET], name)
        if chat:
            lm.tokenizer.add_special_tokens({"additional_special_tokens": ["<|end|>"]})
            lm.model.resize_token_embeddings(len(lm.tokenizer))
            lm.tokenizer.chat_template = TEMPLATE
        lm.model.save_pretrained(root / name)
        lm.tokenizer.save_pretrained(root / name)
        sources[name] = {"checkpoint": str(root / name)}
    return sources


def config(root, sources, **data) -> dict:
    path = root / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return {"run_dir": str(root / "run"), "teacher": sources["teacher"], "students": {"student": sources["student"]},
            "data": {"task": "questions", "path": str(path), "fields": {"trace": "solution"}, **data},
            "probes": {"traces": {"max_new_tokens": 12, "batch_size": 4}, "calibration": {"batch_size": 4},
                       "representations": {"n": 4}}}


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("questions_audit")
    cfg = config(root, folders(root), few_shot=1)
    return root, cfg, audit.run(cfg, progress=False)


def test_the_audit_runs_on_the_file_and_the_few_shot_row_is_not_asked(audited):
    root, cfg, results = audited
    assert results["data"]["task"] == "questions" and results["data"]["splits"] == {"test": len(ROWS) - 1}
    rows = RunDir(root / "run").stage("traces").rows()
    asked = [r["question"] for r in rows if r["model"] == "teacher"]
    assert asked == [r["question"] for r in ROWS[1:]]
    assert len(RunDir(root / "run").stage("generate-teacher").rows()) == len(ROWS) - 1


def test_the_headline_recomputes_from_the_saved_traces(audited):
    root, cfg, results = audited
    run = RunDir(root / "run")
    questions = examples(load_questions(cfg["data"]["path"], fields={"trace": "solution"})[1:], AnswerSettings())
    for name in ("teacher", "student"):
        texts = [row["text"] for row in run.stage(f"generate-{name}").rows()]
        checks = T.check_traces(questions, texts)
        entry = results["teacher"] if name == "teacher" else results["students"]["student"]
        assert entry["accuracy"] == sum(c.answer_correct for c in checks) / len(checks)
        judged = [c.trace_correct for c in checks if c.trace_correct is not None]
        assert entry["n_trace_checked"] == len(judged)
        assert entry["trace_accuracy"] == (sum(judged) / len(judged) if judged else None)


def test_breakdowns_by_difficulty_and_category_cover_every_question(audited):
    _, _, results = audited
    categories = results["breakdowns"]["categories"]["questions"]
    assert categories["category"] == ["arithmetic", "where_is", "word_problem"]
    assert sum(categories["n"]) == len(ROWS) - 1
    steps = results["breakdowns"]["steps"]["questions"]
    assert steps["difficulty"] == [1.0, 2.0] and sum(steps["n"]) == len(ROWS) - 1


def test_a_teacher_that_never_answers_right_is_no_reference_and_no_student_is_chosen(audited):
    _, _, results = audited
    card = results["scorecard"]
    assert results["teacher"]["accuracy"] < 0.5
    assert card["teacher_reference"]["is_reference"] is False and card["chosen"] is None
    assert all(s["verdict"] != "recommended" for s in results["students"].values())


def test_the_report_says_what_was_checked(audited):
    root, _, _ = audited
    page = render(root / "run").read_text()
    assert "your questions" in page and "By difficulty and category" in page
    assert "every equation a trace states is verified exactly" in page


def test_steps_none_gives_fidelity_only_trace_figures(tmp_path):
    cfg = config(tmp_path, folders(tmp_path), answer={"steps": "none"})
    results = audit.run(cfg, progress=False)
    assert results["teacher"]["trace_accuracy"] is None and results["teacher"]["n_trace_checked"] == 0
    student = results["students"]["student"]
    assert student["p_answer_given_correct_trace"] is None and student["bleu"] is not None
    assert student["step_agreement"] is not None  # against the teacher's sentences
    assert "the trace figures are fidelity to the teacher only" in render(tmp_path / "run").read_text()


def test_with_chat_each_model_gets_its_template_with_the_shots_as_earlier_turns(tmp_path):
    from kdlens.audit.lm.config import LMAuditConfig
    from kdlens.audit.lm.kind import LANGUAGE_MODEL

    cfg = config(tmp_path, folders(tmp_path, chat=True), chat=True, system_prompt="Answer briefly.", few_shot=1)
    prepared = LANGUAGE_MODEL.prepare(LMAuditConfig.model_validate(cfg), None, None, None, False)
    first = prepared.extra["asked"]["teacher"][0].prompt
    assert first == ("<bos>system: Answer briefly.<|end|>\nuser: " + ROWS[0]["question"] + "<|end|>\nassistant: "
                     "5 + 3 = 8. The answer is 8.<|end|>\nuser: " + ROWS[1]["question"] + "<|end|>\nassistant:")
    results = audit.run(cfg, progress=False)
    assert results["data"]["chat"] is True and results["data"]["prompt_template"] == "{question}"


@pytest.mark.parametrize("rows, data, message", [
    ([{"q": "x", "answer": "1"}], {}, r"a column 'question'.*the columns \['q', 'answer'\]"),
    ([], {}, "an empty file"),
    ([{"question": "x", "answer": "1"}], {"few_shot": 1}, "beyond the 1 used as few-shot examples"),
    ([{"question": "x", "answer": "1"}], {"chat": False, "system_prompt": "hi"}, "chat is false"),
    ([{"question": "x", "answer": "1"}], {"prompt_template": "Q: {question} {shots}"}, r"but got \{shots\}"),
    ([{"question": "x", "answer": "1"}], {"few_shot": 1, "prompt_template": "Q: {question}",
                                          "shots_path": "s.jsonl"}, r"has no \{examples\}"),
])
def test_bad_question_files_and_settings_fail_before_any_model_loads(tmp_path, rows, data, message):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"run_dir": str(tmp_path / "run"), "teacher": {"checkpoint": str(tmp_path / "absent")},
           "students": {"s": {"checkpoint": str(tmp_path / "absent")}},
           "data": {"task": "questions", "path": str(path), **data}}
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        audit.run(cfg, progress=False)
