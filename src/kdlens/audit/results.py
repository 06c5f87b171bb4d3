"""``results.json``: the audit's headline numbers, read off the stages' figures, plus the scorecard.

The file is a contract users script against; ``SCHEMA_VERSION`` changes whenever a key is renamed or removed
(adding keys does not). Every student carries every key of ``STUDENT_KEYS``; a probe that did not run leaves its
keys ``null``, never an invented number. The layout is documented in ``docs/results.md``.
"""

from __future__ import annotations

from pathlib import Path

import kdlens
from kdlens import io
from kdlens.audit.common import TEACHER
from kdlens.audit.config import SelectionRule
from kdlens.audit.scorecard import scorecard
from kdlens.probes.consistency import VERDICTS

SCHEMA_VERSION = 1
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


def stage_figures(run_dir: Path) -> dict[str, dict | None]:
    """Each probe stage's ``figures.json`` (None for a stage that did not run), read once."""
    paths = {stage: run_dir / "stages" / stage / "figures.json" for stage in STAGES}
    return {stage: io.read_json(path) if path.is_file() else None for stage, path in paths.items()}


def headline(figures: dict[str, dict | None], primary: str, shifted: str | None, models: list[str]) -> dict[str, dict]:
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
                right = shares[VERDICTS[0]] + shares[VERDICTS[1]]
                row["right_for_wrong_reasons"] = shares[VERDICTS[1]] / right if right > 0 else None
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


def _teacher(figures: dict[str, dict | None], primary: str, shifted: str | None, students: list[str]) -> dict:
    row = headline(figures, primary, shifted, [TEACHER])[TEACHER]
    teacher = {k: row.get(k) for k in TEACHER_KEYS}
    if figures["attribution"] is not None:
        teacher["evidence_mass"] = _mean(figures["attribution"]["models"].get(TEACHER), "evidence")
    robustness = figures["robustness"]
    if robustness is not None:
        teacher["robust_accuracy"] = robustness.get("teacher_robust_accuracy")
        if students and "teacher_flips" in robustness["models"].get(students[0], {}):
            teacher["cue_flip_rate"] = _mean(robustness["models"][students[0]], "teacher_flips")
    return teacher


def attach_verdicts(metrics: dict[str, dict], card: dict) -> None:
    """Copy each student's verdict, risks, score, rank, Pareto flag and failed floors from the scorecard into its
    metrics (in place)."""
    keys = ("verdict", "verdict_text", "risks", "score", "rank", "pareto", "failed_floors")
    for name, entry in card["students"].items():
        metrics[name].update({k: entry[k] for k in keys})


def build_results(run_dir: str | Path, students: list[str], baselines: list[str], data: dict,
                  rule: SelectionRule, extra: dict | None = None) -> dict:
    """Assemble ``results.json`` from the stage files under ``run_dir`` and write it atomically.

    Parameters
    ----------
    run_dir : the run directory
    students, baselines : model names (baselines are reported beside the students, never chosen)
    data : ``{"primary": split, "shifted": split or None, "splits": {name: n}, "has_masks": bool,
        "has_counterfactuals": bool}``
    rule : the selection rule of the scorecard
    extra : more top-level keys (e.g. ``breakdowns``, ``gallery``, ``layers``)

    Returns
    -------
    dict: what was written.
    """
    run_dir = Path(run_dir)
    primary, shifted = data["primary"], data.get("shifted")
    figures = stage_figures(run_dir)
    metrics = headline(figures, primary, shifted, [*students, *baselines])
    teacher = _teacher(figures, primary, shifted, students)
    card = scorecard(teacher, {n: metrics[n] for n in students}, rule, has_masks=data.get("has_masks", False))
    return write_results(run_dir, data, teacher, metrics, students, baselines, card, {
        "thresholds": (figures["attribution"] or {}).get("thresholds") or None, **(extra or {})})


def write_results(run_dir: Path, data: dict, teacher: dict, metrics: dict[str, dict], students: list[str],
                  baselines: list[str], card: dict, sections: dict) -> dict:
    """Attach each student's verdict, then write ``results.json`` atomically: the versioned header, ``data``,
    ``teacher``, ``students`` (config order), ``baselines``, ``scorecard``, then ``sections`` (the audit kind's
    own keys). ``metrics`` holds every student's and baseline's headline numbers by name."""
    attach_verdicts(metrics, card)
    results = {
        "schema_version": SCHEMA_VERSION,
        "kdlens_version": kdlens.__version__,
        "data": data,
        "teacher": teacher,
        "students": {n: metrics[n] for n in students},
        "baselines": {n: metrics[n] for n in baselines},
        "scorecard": {k: v for k, v in card.items() if k != "students"},
        **sections,
    }
    io.atomic_write_json(run_dir / "results.json", results, sort_keys=False)
    return results
