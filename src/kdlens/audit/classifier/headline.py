"""A classifier audit's headline numbers for ``results.json``, read off the stages' figures.

Every student carries every key of ``STUDENT_KEYS``; a probe that did not run leaves its keys ``null``, never an
invented number. The layout is documented in ``docs/results.md``.
"""

from __future__ import annotations

import torch

from kdlens.audit.common import TEACHER
from kdlens.audit.kind import Headline
from kdlens.rundir import RunDir
from kdlens.tasks.files import EvalSplit

STUDENT_KEYS = ("accuracy", "accuracy_shifted", "agreement", "kl", "js", "ece", "mce", "brier", "nll",
                "ece_temperature_scaled", "overconfidence", "cka_mean_best", "attribution_spearman", "evidence_mass",
                "right_for_wrong_reasons", "cue_flip_rate", "adversarial_agreement", "robust_accuracy")
TEACHER_KEYS = ("accuracy", "accuracy_shifted", "ece", "mce", "brier", "nll", "ece_temperature_scaled",
                "overconfidence", "evidence_mass", "cue_flip_rate", "robust_accuracy")


def _overconfidence(entry: dict) -> float | None:
    """Mean confidence minus accuracy (> 0: over-confident), from the reliability curve's bins."""
    curve = entry["reliability"]
    pairs = [(c, n) for c, n in zip(curve["confidence"], curve["count"], strict=True) if c is not None]
    total = sum(n for _, n in pairs)
    return sum(c * n for c, n in pairs) / total - entry["accuracy"] if total else None


def _mean(entry: dict | None, key: str) -> float | None:
    value = (entry or {}).get(key)
    return value.get("mean") if isinstance(value, dict) else value


def _interval(entry: dict | None, key: str) -> list | None:
    value = (entry or {}).get(key)
    return [value["low"], value["high"]] if isinstance(value, dict) and value.get("low") is not None else None


STAGES = ("outputs", "representations", "attribution", "robustness")


def stage_figures(run: RunDir) -> dict[str, dict | None]:
    """Each probe stage's ``figures.json`` (None for a stage that did not run), read once."""
    return {stage: run.stage(stage).figures() for stage in STAGES}


def metrics(figures: dict[str, dict | None], primary: str, shifted: str | None, models: list[str]) -> dict[str, dict]:
    """Per model, the headline metrics (``STUDENT_KEYS``) and their 95% intervals where the stage has them."""
    outputs, representations = figures["outputs"], figures["representations"]
    attribution, robustness = figures["attribution"], figures["robustness"]
    out: dict[str, dict] = {}
    for name in models:
        row: dict = dict.fromkeys(STUDENT_KEYS)
        intervals: dict = {}
        if outputs is not None and name in outputs["splits"][primary]["models"]:
            entry = outputs["splits"][primary]["models"][name]
            for key in ("accuracy", "agreement", "kl", "js", "ece", "mce", "brier", "nll", "ece_temperature_scaled"):
                row[key] = entry.get(key)
            row["overconfidence"] = _overconfidence(entry)
            if shifted is not None:
                row["accuracy_shifted"] = outputs["splits"][shifted]["models"][name]["accuracy"]
        if representations is not None and name in representations["students"]:
            row["cka_mean_best"] = representations["students"][name]["cka_mean_best"]
        if attribution is not None and name in attribution["models"]:
            entry = attribution["models"][name]
            row["attribution_spearman"] = _mean(entry, "spearman")
            row["evidence_mass"] = _mean(entry, "evidence")
            intervals.update(attribution_spearman=_interval(entry, "spearman"),
                             evidence_mass=_interval(entry, "evidence"))
            if "verdicts" in entry:
                shares = entry["verdicts"]["overall"]
                right = shares["right_for_right_reasons"] + shares["right_for_wrong_reasons"]
                row["right_for_wrong_reasons"] = shares["right_for_wrong_reasons"] / right if right > 0 else None
        if robustness is not None and name in robustness["models"]:
            entry = robustness["models"][name]
            row["adversarial_agreement"] = _mean(entry, "agree_on_student_attack")
            row["robust_accuracy"] = _mean(entry, "student_correct")
            row["cue_flip_rate"] = _mean(entry, "student_flips")
            intervals.update(adversarial_agreement=_interval(entry, "agree_on_student_attack"),
                             cue_flip_rate=_interval(entry, "student_flips"))
        row["intervals"] = {k: v for k, v in intervals.items() if v is not None}
        out[name] = row
    return out


def _teacher(figures: dict[str, dict | None], primary: str, shifted: str | None, students: list[str],
             n_classes: int) -> dict:
    row = metrics(figures, primary, shifted, [TEACHER])[TEACHER]
    teacher = {k: row.get(k) for k in TEACHER_KEYS}
    teacher["chance"] = 1 / n_classes  # what guessing scores: the competence floor starts from it
    if figures["attribution"] is not None:
        teacher["evidence_mass"] = _mean(figures["attribution"]["models"].get(TEACHER), "evidence")
    robustness = figures["robustness"]
    if robustness is not None:
        teacher["robust_accuracy"] = robustness.get("teacher_robust_accuracy")
        if students and "teacher_flips" in robustness["models"].get(students[0], {}):
            teacher["cue_flip_rate"] = _mean(robustness["models"][students[0]], "teacher_flips")
    return teacher


def difficulty_breakdown(run: RunDir, data: EvalSplit, models: list[str], bins: int = 4) -> dict | None:
    """Accuracy per equal-count difficulty bin of the primary split, per model (from the outputs table)."""
    if data.difficulty is None:
        return None
    rows = run.stage("outputs").rows()
    correct = {(r["model"], r["index"]): r["correct"] for r in rows if r["split"] == data.name}
    order = torch.argsort(data.difficulty.double(), stable=True)
    parts = [p for p in order.tensor_split(bins) if len(p)]
    out = {"bins": [{"low": float(data.difficulty[p].min()), "high": float(data.difficulty[p].max()), "n": len(p)}
                    for p in parts], "accuracy": {}}
    for name in models:
        out["accuracy"][name] = [sum(correct[(name, i)] for i in p.tolist()) / len(p) for p in parts]
    return out


def headline(run: RunDir, primary: EvalSplit, data: dict, students: list[str], baselines: list[str],
             sections: dict) -> Headline:
    """The headline of a classifier audit from its run directory: ``data`` as given, the teacher's and every
    student's and baseline's metrics, and the sections (``thresholds``, ``breakdowns`` after ``sections``'s
    ``layers`` and ``models``, then ``probes``)."""
    figures = stage_figures(run)
    found = metrics(figures, data["primary"], data.get("shifted"), [*students, *baselines])
    n_classes = (figures["outputs"] or {}).get("n_classes") or (
        len(primary.classes) if primary.classes else int(primary.labels.max()) + 1)
    teacher = _teacher(figures, data["primary"], data.get("shifted"), students, n_classes)
    breakdowns = {"difficulty": difficulty_breakdown(run, primary, [TEACHER, *students])}
    return Headline(data, teacher, found, {
        "thresholds": (figures["attribution"] or {}).get("thresholds") or None, "layers": sections["layers"],
        "models": sections["models"], "breakdowns": breakdowns, "probes": sections["probes"]})
