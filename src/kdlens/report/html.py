"""``report.html`` and ``summary.md`` from a run directory's result files alone (no model, no torch).

:func:`render` reads ``results.json``, the stages' ``figures.json`` and the gallery, draws every plot inline (SVG,
PNG data URIs) and writes a page that makes no network request. All text goes through Jinja's autoescape, model
generations and user-chosen names included.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

import jinja2

from kdlens.report import plots
from kdlens.report.gallery import attribution_tile

TEMPLATES = Path(__file__).parent / "templates"
SECTIONS = ("summary", "pareto", "calibration", "representations", "attribution", "robustness", "difficulty",
            "method")
FIGURES = ("pareto", "reliability", "cka", "verdicts", "robust_accuracy", "robust_agreement", "cue_flips",
           "difficulty", "difficulty_reasons")
COLUMNS = (  # (key, header, format): the summary table, in reading order
    ("accuracy", "accuracy", "pct"), ("accuracy_shifted", "shifted acc.", "pct"), ("agreement", "agreement", "pct"),
    ("kl", "KL(T||S)", "f3"), ("ece", "ECE", "f3"), ("cka_mean_best", "CKA", "f2"),
    ("attribution_spearman", "attr. Spearman", "f2"), ("evidence_mass", "evidence mass", "pct"),
    ("right_for_wrong_reasons", "right for wrong reasons", "pct"), ("cue_flip_rate", "cue flips", "pct"),
    ("adversarial_agreement", "adv. agreement", "pct"))


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _fmt(value, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    return f"{value:.{kind[1]}f}"


def _label(classes: list[str] | None, index: int | None) -> str:
    if index is None:
        return "–"
    return classes[index] if classes and 0 <= index < len(classes) else str(index)


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _gallery(run_dir: Path, results: dict, per_kind: int) -> list[dict]:
    """Per student, per kind: rows of (caption, teacher tile, student tile, counterfactual tile)."""
    folder = run_dir / "stages" / "gallery"
    index = _read(folder / "gallery.json")
    if not index or not index.get("has_images"):
        return []
    from safetensors.numpy import load_file

    arrays = load_file(str(folder / "gallery.safetensors"))
    images = arrays["images"]
    size = int(min(max(images.shape[-2:]), 128))  # native pixels; the page scales them up, pixelated
    out = []
    for name in results["students"]:
        kinds = []
        for kind in index["kinds"]:
            rows = []
            for entry in [e for e in index["entries"] if e["student"] == name and e["kind"] == kind][:per_kind]:
                row = entry["row"]
                if row is None or f"maps.{name}" not in arrays:
                    continue
                tiles = {"teacher": attribution_tile(images[row], arrays["maps.teacher"][row], size),
                         "student": attribution_tile(images[row], arrays[f"maps.{name}"][row], size)}
                if kind == "cue_flip" and "counterfactuals" in arrays:
                    tiles["counterfactual"] = attribution_tile(arrays["counterfactuals"][row], None, size)
                rows.append({**entry, "tiles": tiles})
            kinds.append({"kind": kind, "rows": rows})
        out.append({"student": name, "kinds": kinds})
    return out


def _figures(run_dir: Path, results: dict) -> dict:
    """Every plot of the page, as inline SVG strings (None where the stage did not run)."""
    stages = run_dir / "stages"
    outputs, representations = _read(stages / "outputs" / "figures.json"), _read(stages / "representations" /
                                                                                   "figures.json")
    attribution, robustness = _read(stages / "attribution" / "figures.json"), _read(stages / "robustness" /
                                                                                   "figures.json")
    students, primary = list(results["students"]), results["data"]["primary"]
    figs: dict = dict.fromkeys(FIGURES)  # None: that plot has nothing to draw
    axes = results["scorecard"]["pareto_axes"]
    points = {n: tuple(results["students"][n].get(a) for a in axes) for n in students}
    if any(None not in p for p in points.values()):
        figs["pareto"] = plots.pareto_scatter(points, results["scorecard"]["pareto_front"], "accuracy",
                                              "attribution Spearman with the teacher",
                                              "accuracy vs reasoning consistency")
    if outputs is not None:
        figs["reliability"] = {}
        for split, entry in outputs["splits"].items():
            curves = {n: entry["models"][n]["reliability"] for n in ["teacher", *students] if n in entry["models"]}
            figs["reliability"][split] = plots.reliability_diagram(curves, f"reliability on {split}")
    if representations is not None:
        figs["cka"] = {n: plots.cka_heatmap(e["cka"], representations["teacher_layers"], e["student_layers"],
                                            f"linear CKA: teacher x {n}")
                       for n, e in representations["students"].items() if n in students}
    if attribution is not None:
        verdicts = [n for n in students if "verdicts" in attribution["models"].get(n, {})]
        if verdicts:
            shares = ("right_for_right_reasons", "right_for_wrong_reasons", "wrong")
            figs["verdicts"] = plots.bar_chart(
                list(verdicts), {s.replace("_", " "): [attribution["models"][n]["verdicts"]["overall"][s]
                                                       for n in verdicts] for s in shares},
                "share of examples", "verdicts per student")
    if robustness is not None and "curve" in robustness:
        curve = robustness["curve"]
        eps = [e * 255 for e in curve["epsilons"]]
        figs["robust_accuracy"] = plots.line_chart(eps, curve["accuracy"], "epsilon (x 1/255)",
                                                   "accuracy under its own attack", "PGD: accuracy")
        figs["robust_agreement"] = plots.line_chart(eps, curve["agreement"], "epsilon (x 1/255)",
                                                    "agreement with the teacher", "PGD: agreement")
    flips = {n: results["students"][n]["cue_flip_rate"] for n in students}
    if any(v is not None for v in flips.values()):
        figs["cue_flips"] = plots.bar_chart(students, {"cue flips": [flips[n] for n in students]},
                                            "share of answers changed", "answers that follow an edited cue")
    difficulty = (results.get("breakdowns") or {}).get("difficulty")
    if difficulty:
        centres = [round((b["low"] + b["high"]) / 2, 3) for b in difficulty["bins"]]
        figs["difficulty"] = plots.line_chart(centres, difficulty["accuracy"], "difficulty (bin centre)",
                                              "accuracy", f"accuracy by difficulty on {primary}")
    if attribution is not None:
        verdict_bins = {n: attribution["models"][n]["verdicts"].get("by_difficulty") for n in students
                        if "verdicts" in attribution["models"].get(n, {})}
        if verdict_bins and all(verdict_bins.values()):
            first = next(iter(verdict_bins.values()))
            centres = [round((b["low"] + b["high"]) / 2, 3) for b in first]
            figs["difficulty_reasons"] = plots.line_chart(
                centres, {n: [b["right_for_wrong_reasons"] for b in bins] for n, bins in verdict_bins.items()},
                "difficulty (bin centre)", "share right for wrong reasons", "wrong reasons by difficulty")
    return figs


def _context(run_dir: Path, results: dict, per_kind: int) -> dict:
    students = results["students"]
    rows = [{"name": "teacher", "role": "teacher", "cells": [_fmt(results["teacher"].get(k), f) for k, _, f in
                                                             COLUMNS], "verdict": None}]
    for name, s in students.items():
        rows.append({"name": name, "role": "student", "verdict": s["verdict"],
                     "cells": [_fmt(s.get(k), f) for k, _, f in COLUMNS]})
    for name, s in results.get("baselines", {}).items():
        rows.append({"name": name, "role": "baseline", "verdict": None,
                     "cells": [_fmt(s.get(k), f) for k, _, f in COLUMNS]})
    card = results["scorecard"]
    return {"results": results, "run_dir": str(run_dir), "columns": [h for _, h, _ in COLUMNS], "rows": rows,
            "card": card, "students": students, "figures": _figures(run_dir, results),
            "gallery": _gallery(run_dir, results, per_kind), "sections": SECTIONS,
            "outputs": _read(run_dir / "stages" / "outputs" / "figures.json"),
            "attribution": _read(run_dir / "stages" / "attribution" / "figures.json"),
            "robustness": _read(run_dir / "stages" / "robustness" / "figures.json"),
            "representations": _read(run_dir / "stages" / "representations" / "figures.json"),
            "fmt": _fmt, "label": functools.partial(_label, results["data"].get("classes"))}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def summary_markdown(results: dict) -> str:
    """``summary.md``: the verdicts and the headline table, for a pull request or a lab notebook."""
    card = results["scorecard"]
    if results["data"].get("task") == "reasoning":
        from kdlens.report.lm_html import COLUMNS as columns
    else:
        columns = COLUMNS

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["# kdlens audit", ""]
    chosen, by_accuracy = card.get("chosen"), card.get("chosen_by_accuracy")
    if chosen is None:
        lines.append("**No student passes the selection rule's floors.**")
    else:
        lines.append(f"**Chosen: {cell(chosen)}.**" + (f" Accuracy alone would have chosen {cell(by_accuracy)}."
                                                         if by_accuracy and by_accuracy != chosen else ""))
    lines += ["", "| model | verdict | " + " | ".join(h for _, h, _ in columns) + " |",
              "|---|---|" + "---:|" * len(columns)]
    lines.append("| teacher | | " + " | ".join(_fmt(results["teacher"].get(k), f) for k, _, f in columns) + " |")
    for name, s in results["students"].items():
        lines.append(f"| {cell(name)} | {s['verdict']} | " + " | ".join(_fmt(s.get(k), f) for k, _, f in columns)
                     + " |")
    lines += ["", "## Verdicts", ""]
    lines += [f"- **{cell(name)}**: {cell(s['verdict_text'])}" for name, s in results["students"].items()]
    return "\n".join(lines) + "\n"


def render(run_dir: str | Path, per_kind: int = 4) -> Path:
    """Write ``report.html`` and ``summary.md`` into ``run_dir`` from its result files; returns the HTML's path.

    Parameters
    ----------
    run_dir : a run directory written by ``kdlens audit`` (needs ``results.json``)
    per_kind : gallery examples per student and kind (right for wrong reasons, disagreement, cue flip)
    """
    run_dir = Path(run_dir)
    results = _read(run_dir / "results.json")
    if results is None:
        raise FileNotFoundError(f"Expected `run_dir` to hold results.json, but got {run_dir} without it. Run "
                                f"`kdlens audit CONFIG` first (its run_dir is the folder to report on).")
    if results["data"].get("task") == "reasoning":
        from kdlens.report.lm_html import lm_context

        html = _environment().get_template("report_lm.html.j2").render(**lm_context(run_dir, results, _fmt))
    else:
        html = _environment().get_template("report.html.j2").render(**_context(run_dir, results, per_kind))
    path = run_dir / "report.html"
    _write(path, html)
    _write(run_dir / "summary.md", summary_markdown(results))
    return path
