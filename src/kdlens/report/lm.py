"""The report's sections for language models that reason in steps (``results.json`` with ``kind == "lm"``): what
:func:`kdlens.report.render` fills ``report_lm.html.j2`` with.

Sections: the verdicts and the headline table; fidelity vs accuracy (one point per student: answer accuracy against
step agreement and against BLEU with the teacher's traces); the trace x answer contingency table of every model
with P(correct answer | correct trace), P(correct answer | wrong trace) and the independence test; accuracy,
trace accuracy and step agreement by number of steps (where chains break) and, for your questions, by category;
the calibration of the answer's probability; CKA between layers; where each sentence of the distilled students'
traces came from (:mod:`kdlens.report.provenance`); what a crosscoder of the base student and each distilled one
says distillation changed inside (:mod:`kdlens.report.crosscoder`); sample traces with each sentence marked right or
wrong. Where no checker could judge a trace (your questions with ``steps: none``), the page says the trace figures
are fidelity only.
"""

from __future__ import annotations

from kdlens.report import crosscoder, plots, provenance
from kdlens.report.tables import fmt, table_rows
from kdlens.rundir import RunDir

TEMPLATE = "report_lm.html.j2"
SECTIONS = ("summary", "fidelity", "contingency", "steps", "calibration", "representations", "provenance", "crosscoder",
            "samples", "method")
COLUMNS = (  # (key, header, format): the summary table, in reading order
    ("accuracy", "accuracy", "pct"), ("agreement", "answer agreement", "pct"),
    ("trace_accuracy", "trace accuracy", "pct"), ("step_agreement", "step agreement", "pct"),
    ("bleu", "BLEU vs teacher", "f3"), ("right_for_wrong_reasons", "right answer, wrong trace", "pct"),
    ("p_answer_given_correct_trace", "P(CA | CT)", "pct"), ("p_answer_given_incorrect_trace", "P(CA | IT)", "pct"),
    ("independence_p_value", "χ² p", "f3"), ("ece", "answer ECE", "f3"), ("cka_mean_best", "CKA", "f2"))
TASK_UNITS = {"chains": "steps", "babi": "supporting facts", "questions": "difficulty"}
SAMPLE_TITLES = {"right_answer_wrong_trace": "right answer, wrong trace",
                 "right_trace_wrong_answer": "right trace, wrong answer",
                 "disagrees_with_teacher": "answer differs from the teacher's"}


def _figures(results: dict, stages: dict[str, dict | None]) -> dict:
    """Every plot of the page, as inline SVG strings (None where there is nothing to draw)."""
    students = list(results["students"])
    figs: dict = {"fidelity": None, "bleu": None, "steps": {}, "categories": {}, "reliability": None, "cka": None}
    card = results["scorecard"]
    points = {n: (results["students"][n]["accuracy"], results["students"][n]["step_agreement"]) for n in students}
    if any(None not in p for p in points.values()):
        figs["fidelity"] = plots.pareto_scatter(points, card["pareto_front"], "answer accuracy",
                                                "step agreement with the teacher", "fidelity vs accuracy")
    bleu = {n: (results["students"][n]["accuracy"], results["students"][n]["bleu"]) for n in students}
    if any(None not in p for p in bleu.values()):
        figs["bleu"] = plots.pareto_scatter(bleu, [], "answer accuracy", "BLEU against the teacher's traces",
                                            "text overlap vs accuracy")
    for task, part in results["breakdowns"]["steps"].items():
        unit = TASK_UNITS.get(task, "difficulty")
        figs["steps"][task] = {
            key: plots.line_chart(part["difficulty"], part[key], f"number of {unit}", label, f"{task}: {label}")
            for key, label in (("accuracy", "answer accuracy"), ("trace_accuracy", "trace accuracy"),
                               ("step_agreement", "step agreement with the teacher")) if _drawn(part[key])}
    for task, part in results["breakdowns"].get("categories", {}).items():
        figs["categories"][task] = {
            key: plots.bar_chart([str(c) for c in part["category"]], part[key], label, f"{task}: {label} by category")
            for key, label in (("accuracy", "answer accuracy"), ("trace_accuracy", "trace accuracy"),
                               ("agreement", "answer agreement with the teacher")) if _drawn(part[key])}
    calibration = stages["calibration"]
    if calibration is not None:
        curves = {n: e["reliability"] for n, e in calibration["models"].items() if e["reliability"] is not None}
        if curves:
            figs["reliability"] = plots.reliability_diagram(curves, "probability of the answer written")
    representations = stages["representations"]
    if representations is not None:
        figs["cka"] = {n: plots.cka_heatmap(e["cka"], e["teacher_layers"], e["student_layers"],
                                            f"linear CKA: teacher x {n}")
                       for n, e in representations["students"].items() if n in students}
    return figs


def _drawn(series: dict[str, list]) -> bool:
    """Whether a breakdown's series has a number to draw (trace accuracy is None where nothing was checked)."""
    return any(v is not None for values in series.values() for v in values)


def _contingency(results: dict) -> list[dict]:
    """Per model (teacher first): the overall trace x answer table and each task's."""
    out = [{"name": "teacher", "entry": results["teacher"]["contingency"]}]
    out += [{"name": n, "entry": s["contingency"]} for n, s in results["students"].items()]
    return out


def context(run: RunDir, results: dict, per_kind: int = 4) -> dict:
    """The template's variables for a language-model audit (each stage's figures read once; ``per_kind`` is the
    classifier gallery's and unused: the samples were chosen by the audit)."""
    stages = {name: run.stage(name).figures() for name in ("traces", "calibration", "representations")}
    return {"results": results, "run_dir": str(run.path), "columns": [h for _, h, _ in COLUMNS],
            "rows": table_rows(results, COLUMNS), "card": results["scorecard"], "students": results["students"],
            "figures": _figures(results, stages), "sections": SECTIONS, "contingency": _contingency(results),
            "samples": results.get("samples", {}), "sample_titles": SAMPLE_TITLES, "task_units": TASK_UNITS,
            "provenance": provenance.section(run, list(results["students"])),
            "crosscoder": crosscoder.section(run, list(results["students"])), "crosscoder_how": crosscoder.HOW_TO_RUN,
            **stages, "fmt": fmt}
