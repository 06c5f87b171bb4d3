"""The report's page for language models that reason in steps (``results.json`` with ``data.task == "reasoning"``):
what :func:`kdlens.report.render` fills ``report_lm.html.j2`` with.

Sections: the verdicts and the headline table; fidelity vs accuracy (one point per student: answer accuracy against
step agreement and against BLEU with the teacher's traces); the trace x answer contingency table of every model
with P(correct answer | correct trace), P(correct answer | wrong trace) and the independence test; accuracy,
trace accuracy and step agreement by number of steps (where chains break); the calibration of the answer's
probability; CKA between layers; sample traces with each sentence marked right or wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdlens.report import plots

SECTIONS = ("summary", "fidelity", "contingency", "steps", "calibration", "representations", "samples", "method")
COLUMNS = (  # (key, header, format): the summary table, in reading order
    ("accuracy", "accuracy", "pct"), ("agreement", "answer agreement", "pct"),
    ("trace_accuracy", "trace accuracy", "pct"), ("step_agreement", "step agreement", "pct"),
    ("bleu", "BLEU vs teacher", "f3"), ("right_for_wrong_reasons", "right answer, wrong trace", "pct"),
    ("p_answer_given_correct_trace", "P(CA | CT)", "pct"), ("p_answer_given_incorrect_trace", "P(CA | IT)", "pct"),
    ("independence_p_value", "χ² p", "f3"), ("ece", "answer ECE", "f3"), ("cka_mean_best", "CKA", "f2"))
TASK_UNITS = {"chains": "steps", "babi": "supporting facts"}
SAMPLE_TITLES = {"right_answer_wrong_trace": "right answer, wrong trace",
                 "right_trace_wrong_answer": "right trace, wrong answer",
                 "disagrees_with_teacher": "answer differs from the teacher's"}


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _figures(run_dir: Path, results: dict) -> dict:
    """Every plot of the page, as inline SVG strings (None where there is nothing to draw)."""
    students = list(results["students"])
    figs: dict = {"fidelity": None, "bleu": None, "steps": {}, "reliability": None, "cka": None}
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
                               ("step_agreement", "step agreement with the teacher")) if part[key]}
    calibration = _read(run_dir / "stages" / "calibration" / "figures.json")
    if calibration is not None:
        curves = {n: e["reliability"] for n, e in calibration["models"].items() if e["reliability"] is not None}
        if curves:
            figs["reliability"] = plots.reliability_diagram(curves, "probability of the answer written")
    representations = _read(run_dir / "stages" / "representations" / "figures.json")
    if representations is not None:
        figs["cka"] = {n: plots.cka_heatmap(e["cka"], e["teacher_layers"], e["student_layers"],
                                            f"linear CKA: teacher x {n}")
                       for n, e in representations["students"].items() if n in students}
    return figs


def _contingency(results: dict) -> list[dict]:
    """Per model (teacher first): the overall trace x answer table and each task's."""
    out = [{"name": "teacher", "entry": results["teacher"]["contingency"]}]
    out += [{"name": n, "entry": s["contingency"]} for n, s in results["students"].items()]
    return out


def lm_context(run_dir: Path, results: dict, fmt) -> dict:
    """The template's variables for a language-model audit."""
    rows = [{"name": "teacher", "role": "teacher", "verdict": None,
             "cells": [fmt(results["teacher"].get(k), f) for k, _, f in COLUMNS]}]
    rows += [{"name": n, "role": "student", "verdict": s["verdict"], "cells": [fmt(s.get(k), f) for k, _, f in COLUMNS]}
             for n, s in results["students"].items()]
    return {"results": results, "run_dir": str(run_dir), "columns": [h for _, h, _ in COLUMNS], "rows": rows,
            "card": results["scorecard"], "students": results["students"], "figures": _figures(run_dir, results),
            "sections": SECTIONS, "contingency": _contingency(results), "samples": results.get("samples", {}),
            "sample_titles": SAMPLE_TITLES, "task_units": TASK_UNITS,
            "calibration": _read(run_dir / "stages" / "calibration" / "figures.json"),
            "representations": _read(run_dir / "stages" / "representations" / "figures.json"),
            "traces": _read(run_dir / "stages" / "traces" / "figures.json"), "fmt": fmt}
