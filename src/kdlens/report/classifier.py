"""The report's sections for classifier audits (``results.json`` with ``kind == "classifier"``): the verdicts and
the headline table, accuracy vs reasoning consistency, calibration, representations, attribution galleries,
robustness, difficulty, method; what :func:`kdlens.report.render` fills ``report.html.j2`` with."""

from __future__ import annotations

import functools

from kdlens.report import plots
from kdlens.report.gallery import attribution_tile
from kdlens.report.tables import fmt, table_rows
from kdlens.rundir import RunDir

TEMPLATE = "report.html.j2"
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


def _label(classes: list[str] | None, index: int | None) -> str:
    if index is None:
        return "–"
    return classes[index] if classes and 0 <= index < len(classes) else str(index)


def _gallery(run: RunDir, results: dict, per_kind: int) -> list[dict]:
    """Per student, per kind: rows of (caption, teacher tile, student tile, counterfactual tile)."""
    index = run.stage("gallery").figures()
    if not index or not index.get("has_images"):
        return []
    arrays = run.stage("gallery").numpy_arrays()
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


def _figures(results: dict, stages: dict[str, dict | None]) -> dict:
    """Every plot of the page, as inline SVG strings (None where the stage did not run)."""
    outputs, representations = stages["outputs"], stages["representations"]
    attribution, robustness = stages["attribution"], stages["robustness"]
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


def context(run: RunDir, results: dict, per_kind: int = 4) -> dict:
    """The template's variables for a classifier audit (each stage's figures read once)."""
    stages = {name: run.stage(name).figures() for name in ("outputs", "representations", "attribution",
                                                            "robustness")}
    return {"results": results, "run_dir": str(run.path), "columns": [h for _, h, _ in COLUMNS],
            "rows": table_rows(results, COLUMNS), "card": results["scorecard"], "students": results["students"],
            "figures": _figures(results, stages), "gallery": _gallery(run, results, per_kind), "sections": SECTIONS,
            **stages, "fmt": fmt, "label": functools.partial(_label, results["data"].get("classes"))}
