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
                   "ece", "overconfidence", "cka_mean_best", "n_trace_checked")
LM_TEACHER_KEYS = ("accuracy", "trace_accuracy", "n_trace_checked", "right_for_wrong_reasons",
                   "p_answer_given_correct_trace", "p_answer_given_incorrect_trace", "independence_p_value", "ece",
                   "overconfidence")
SAMPLE_KINDS = ("right_answer_wrong_trace", "right_trace_wrong_answer", "disagrees_with_teacher")


def right_for_wrong_reasons(table: dict | None) -> float | None:
    """Share of correct answers whose trace is wrong: (CA & IT) / CA, from a trace x answer table's counts (None
    without a table: no trace could be checked)."""
    if table is None:
        return None
    (ct_ca, _), (it_ca, _) = table["counts"]
    return it_ca / (ct_ca + it_ca) if ct_ca + it_ca else None


def _headline(traces: dict, calibration: dict | None, representations: dict | None, rows: list[dict],
              name: str) -> dict:
    overall = traces["models"][name]["overall"]
    row: dict = dict.fromkeys(LM_STUDENT_KEYS)
    row.update({k: overall.get(k) for k in ("accuracy", "trace_accuracy", "bleu", "step_agreement")})
    row["agreement"] = overall.get("answer_agreement")
    row["right_for_wrong_reasons"] = right_for_wrong_reasons(overall["table"])
    table, independence = overall["table"] or {}, overall["independence"] or {}
    row["p_answer_given_correct_trace"] = table.get("p_answer_given_correct_trace")
    row["p_answer_given_incorrect_trace"] = table.get("p_answer_given_incorrect_trace")
    row["independence_p_value"] = independence.get("p_value")
    row["n_trace_checked"] = overall.get("n_trace_checked")
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
        values = [v for v in values if v is not None]  # traces no checker could judge
        if not values:
            continue
        ci = mean_ci(torch.tensor(values, dtype=torch.float64))
        if ci["low"] is not None:
            row["intervals"][key] = [ci["low"], ci["high"]]
    return row


def steps_breakdown(traces: dict, models: list[str], by: str = "difficulty") -> dict:
    """Per task, per number of steps (supporting facts for babi; the file's ``difficulty`` for your questions), or
    with ``by="category"`` per category: n, and per model accuracy, trace accuracy and (students) answer and step
    agreement with the teacher: where chains break. Tasks without such a breakdown are left out."""
    out = {}
    for task, entry in traces["models"][TEACHER]["tasks"].items():
        levels = entry.get(f"by_{by}") or []
        if not levels:
            continue
        part = {by: [level[by] for level in levels], "n": [level["n"] for level in levels]}
        for key, source in (("accuracy", "accuracy"), ("trace_accuracy", "trace_accuracy"),
                            ("agreement", "answer_agreement"), ("step_agreement", "step_agreement")):
            part[key] = {}
            for name in models:
                mine = traces["models"][name]["tasks"][task][f"by_{by}"]
                if source in mine[0]:
                    part[key][name] = [level[source] for level in mine]
        out[task] = part
    return out


def _kind(row: dict) -> list[str]:
    kinds = []
    if row["answer_correct"] and row["trace_correct"] is False:
        kinds.append("right_answer_wrong_trace")
    if row["trace_correct"] is True and not row["answer_correct"]:
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


PROVENANCE_KEYS = ("n_questions", "n_scored", "not_scored", "overall", "by_position", "by_correctness", "by_task",
                   "by_difficulty", "mean_probabilities", "teacher_share_correlation", "early_vs_late",
                   "right_vs_wrong")


def provenance_section(figures: dict | None, students: list[str]) -> dict | None:
    """``results.json``'s ``provenance``: the settings and, per distilled student (in the order of ``students``), the
    category shares with their intervals (overall, by position, by correctness, by task and difficulty) and the two
    findings; the sensitivity grid stays in the stage's figures. None when the probe did not run."""
    if figures is None:
        return None
    settings = {k: figures[k] for k in ("original_student", "per", "alpha", "beta", "segmentation")}
    return {**settings, "students": {name: {k: figures["students"][name][k] for k in PROVENANCE_KEYS}
                                     for name in students if name in figures["students"]}}


CROSSCODER_KEYS = ("base", "layers", "pairing", "widths", "kind", "k", "n_latents", "n_rows", "n_train", "n_eval",
                   "low", "high", "fit", "counts", "inside")


def crosscoder_section(run: RunDir, students: list[str]) -> dict | None:
    """``results.json``'s ``crosscoder``: per distilled student (in the order of ``students``) the crosscoder's fit
    (FVE per model, L0, dead share), the latents per class, the exclusive latents per side with Latent Scaling's
    verdicts, the losses with reconstructions spliced in and with exclusive latents ablated, each exclusive
    latent's statistics and label (contexts stay in the stage's figures), and the steering curves. None when the
    probe did not run."""
    out = {}
    for name in students:
        figures = run.stage(f"crosscoder-{name}").figures()
        if figures is None:
            continue
        entry = {k: figures[k] for k in CROSSCODER_KEYS}
        entry["classes"] = figures["classes"]["counts"]
        entry["latent_scaling_thresholds"] = (figures["latent_scaling"] or {}).get("thresholds")
        entry["latents"] = {side: [{k: v for k, v in e.items() if k != "contexts"} for e in entries]
                            for side, entries in figures["latents"].items()}
        steering = run.stage(f"crosscoder-steering-{name}").figures()
        entry["steering"] = None if steering is None else {k: steering[k] for k in ("scales", "n", "curves")} | {
            "latents": [{k: v for k, v in c.items() if k != "direction"} for c in steering["latents"]]}
        out[name] = entry
    return out or None


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
        "thresholds": None, "breakdowns": {"steps": steps_breakdown(traces, [TEACHER, *students]),
                                           "categories": steps_breakdown(traces, [TEACHER, *students], "category")},
        "samples": pick_samples(rows, [TEACHER, *students], samples),
        "provenance": provenance_section(run.stage("provenance").figures(), students),
        "crosscoder": crosscoder_section(run, students), **sections})
