"""A language-model audit's headline for ``results.json``: the numbers read off the stages' files, the breakdown by
number of steps, and the sample traces the report shows.

The same top-level layout as a classifier audit's (``schema_version``, ``data``, ``teacher``, ``students``,
``scorecard``, ...; ``data.task`` is ``"reasoning"``); every student carries every key of ``LM_STUDENT_KEYS``, null
where a probe did not run. Documented in ``docs/results.md``.
"""

from __future__ import annotations

import torch

from kdlens.audit.common import TEACHER, mean_ci
from kdlens.audit.kind import Headline
from kdlens.rundir import RunDir

LM_STUDENT_KEYS = ("accuracy", "agreement", "trace_accuracy", "step_agreement", "bleu", "right_for_wrong_reasons",
                   "p_answer_given_correct_trace", "p_answer_given_incorrect_trace", "independence_p_value",
                   "ece", "overconfidence", "cka_mean_best")
LM_TEACHER_KEYS = ("accuracy", "trace_accuracy", "right_for_wrong_reasons", "p_answer_given_correct_trace",
                   "p_answer_given_incorrect_trace", "independence_p_value", "ece", "overconfidence")
SAMPLE_KINDS = ("right_answer_wrong_trace", "right_trace_wrong_answer", "disagrees_with_teacher")


def right_for_wrong_reasons(table: dict) -> float | None:
    """Share of correct answers whose trace is wrong: (CA & IT) / CA, from a trace x answer table's counts."""
    (ct_ca, _), (it_ca, _) = table["counts"]
    return it_ca / (ct_ca + it_ca) if ct_ca + it_ca else None


def _headline(traces: dict, calibration: dict | None, representations: dict | None, rows: list[dict],
              name: str) -> dict:
    overall = traces["models"][name]["overall"]
    row: dict = dict.fromkeys(LM_STUDENT_KEYS)
    row.update({k: overall.get(k) for k in ("accuracy", "trace_accuracy", "bleu", "step_agreement")})
    row["agreement"] = overall.get("answer_agreement")
    row["right_for_wrong_reasons"] = right_for_wrong_reasons(overall["table"])
    row["p_answer_given_correct_trace"] = overall["table"]["p_answer_given_correct_trace"]
    row["p_answer_given_incorrect_trace"] = overall["table"]["p_answer_given_incorrect_trace"]
    row["independence_p_value"] = overall["independence"]["p_value"]
    row["contingency"] = {"overall": {"table": overall["table"], "independence": overall["independence"]},
                          **{task: {"table": e["table"], "independence": e["independence"]}
                             for task, e in traces["models"][name]["tasks"].items()}}
    row["by_task"] = {task: {k: e.get(k) for k in ("n", "accuracy", "trace_accuracy", "answer_agreement",
                                                   "step_agreement", "bleu")}
                      for task, e in traces["models"][name]["tasks"].items()}
    if calibration is not None and name in calibration["models"]:
        entry = calibration["models"][name]
        row["ece"] = entry["ece"]
        if entry["mean_confidence"] is not None:
            row["overconfidence"] = entry["mean_confidence"] - entry["accuracy"]
    if representations is not None and name in representations["students"]:
        row["cka_mean_best"] = representations["students"][name]["cka_mean_best"]
    mine = [r for r in rows if r["model"] == name]
    intervals = {"accuracy": [r["answer_correct"] for r in mine], "trace_accuracy": [r["trace_correct"] for r in mine]}
    if name != TEACHER:
        intervals.update(agreement=[r["agree"] for r in mine], step_agreement=[r["step_agreement"] for r in mine])
    row["intervals"] = {}
    for key, values in intervals.items():
        ci = mean_ci(torch.tensor(values, dtype=torch.float64))
        if ci["low"] is not None:
            row["intervals"][key] = [ci["low"], ci["high"]]
    return row


def steps_breakdown(traces: dict, models: list[str]) -> dict:
    """Per task, per number of steps (supporting facts for babi): n, and per model accuracy, trace accuracy and
    (students) answer and step agreement with the teacher: where chains break."""
    out = {}
    for task, entry in traces["models"][TEACHER]["tasks"].items():
        levels = [level["difficulty"] for level in entry["by_difficulty"]]
        part = {"difficulty": levels, "n": [level["n"] for level in entry["by_difficulty"]]}
        for key, source in (("accuracy", "accuracy"), ("trace_accuracy", "trace_accuracy"),
                            ("agreement", "answer_agreement"), ("step_agreement", "step_agreement")):
            part[key] = {}
            for name in models:
                by = traces["models"][name]["tasks"][task]["by_difficulty"]
                if source in by[0]:
                    part[key][name] = [level[source] for level in by]
        out[task] = part
    return out


def _kind(row: dict) -> list[str]:
    kinds = []
    if row["answer_correct"] and not row["trace_correct"]:
        kinds.append("right_answer_wrong_trace")
    if row["trace_correct"] and not row["answer_correct"]:
        kinds.append("right_trace_wrong_answer")
    if row.get("agree") is False:
        kinds.append("disagrees_with_teacher")
    return kinds


def pick_samples(rows: list[dict], models: list[str], per_kind: int) -> dict:
    """Per model and kind (``SAMPLE_KINDS``), the first ``per_kind`` questions of that kind, each with the model's
    trace and the teacher's, every sentence marked right, wrong or not a step (``correct`` true / false / null)."""
    teacher = {r["index"]: r for r in rows if r["model"] == TEACHER}
    keep = ("answer", "answer_correct", "trace_correct", "text", "sentences")
    out: dict = {}
    for name in models:
        picked: dict = {kind: [] for kind in SAMPLE_KINDS}
        for row in (r for r in rows if r["model"] == name):
            for kind in _kind(row):
                if len(picked[kind]) < per_kind:
                    reference = teacher[row["index"]]
                    picked[kind].append({
                        "index": row["index"], "task": row["task"], "difficulty": row["difficulty"],
                        "prompt": row.get("question", row["prompt"]),  # the question, without a template's wrap
                        "gold": row["gold"], "model": {k: row[k] for k in keep},
                        "teacher": None if name == TEACHER else {k: reference[k] for k in keep}})
        out[name] = {kind: items for kind, items in picked.items() if items}
    return out


def headline(run: RunDir, data: dict, students: list[str], sections: dict, samples: int = 3) -> Headline:
    """The headline of a language-model audit from its run directory (its ``traces`` stage done): ``data`` as given,
    the teacher's and every student's metrics, and the sections (``thresholds``, ``breakdowns`` by number of steps,
    the ``samples`` traces per kind and model the report shows, then ``sections``'s ``models`` and ``probes``)."""
    traces, calibration = run.stage("traces").figures(), run.stage("calibration").figures()
    representations = run.stage("representations").figures()
    rows = run.stage("traces").rows()
    metrics = {name: _headline(traces, calibration, representations, rows, name) for name in [TEACHER, *students]}
    teacher = {k: metrics[TEACHER][k] for k in LM_TEACHER_KEYS}
    teacher.update(contingency=metrics[TEACHER]["contingency"], by_task=metrics[TEACHER]["by_task"],
                   intervals=metrics[TEACHER]["intervals"])
    return Headline(data, teacher, metrics, {
        "thresholds": None, "breakdowns": {"steps": steps_breakdown(traces, [TEACHER, *students])},
        "samples": pick_samples(rows, [TEACHER, *students], samples), **sections})
