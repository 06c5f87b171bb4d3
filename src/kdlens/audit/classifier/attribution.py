"""The classifier audit's "attribution" stage: does each student look where the teacher looks, and is it right for
the right reasons?

Writes, under ``stages/attribution/``: ``figures.json`` (per model, the means with 95% bootstrap intervals the report
plots, and the thresholds used), ``rows.jsonl`` (one row per (model, example) with every per-example value), and
``arrays.safetensors`` (``maps.<model>``: the maps of the first ``keep_maps`` examples, all by default, for the
report's galleries and the review page).

Not sharded: the FGSM step of the stability test runs on the whole split at once (its float32 gradients, and so
the maps it compares, depend on the batch), and the verdict thresholds are a quantile over all examples.
"""

from __future__ import annotations

from torch import nn

from kdlens.audit.common import TEACHER, data_digest, digests, mean_ci
from kdlens.probes.consistency import attribution_consistency, verdict_rates, verdicts
from kdlens.rundir import StageOutput
from kdlens.stages import Stage
from kdlens.tasks.files import EvalSplit

RIGHT_FOR_WRONG_REASONS = "right_for_wrong_reasons"  # one of probes.consistency.VERDICTS


def attribution_stage(teacher: nn.Module, students: dict[str, nn.Module], data: EvalSplit,
                      layers: dict[str, str], baselines: dict[str, nn.Module] | None = None, top_k: float = 0.2,
                      quantile: float = 0.1, noise: float = 8 / 255, attack_epsilon: float = 4 / 255,
                      keep_maps: int | None = None, seed: int = 0, batch_size: int = 256,
                      thresholds: dict[str, float] | None = None) -> Stage:
    """Grad-CAM maps of the teacher, each student and each baseline for the teacher's predicted class, compared
    (:func:`kdlens.probes.consistency.attribution_consistency`).

    Parameters
    ----------
    teacher, students : the models; ``students`` maps names to modules
    data : EvalSplit (masks turn on evidence scores, difficulty the breakdown)
    layers : model name (``"teacher"``, each student's and baseline's name) -> the conv layer to explain
    baselines : e.g. ``{"teacher_reseeded": ..., "untrained_student": ...}``; ``teacher_reseeded`` sets the
        agreement threshold and the teacher's own evidence share sets the evidence one
    top_k : fraction of positions for the top-k IoU
    quantile : baseline quantile read as the threshold
    noise, attack_epsilon : the stability tests' noise half-width and FGSM budget, in input units
    thresholds : ``{"agreement_threshold": ..., "evidence_threshold": ...}`` to use when there is no
        ``teacher_reseeded`` baseline to derive them from (without either, no verdicts)
    keep_maps : how many examples' maps to save (None: all; an 8 x 8 map is 256 bytes per model and example)

    Returns
    -------
    Stage ``attribution``; its summary (per model: mean Spearman and, with verdicts, the share right for the wrong
    reasons).
    """
    baselines = baselines or {}
    models = {TEACHER: teacher, **students, **baselines}
    missing = sorted(set(models) - set(layers))
    if missing:
        raise ValueError(f"Expected `layers` to name a layer for every model, but got none for {missing}. "
                         f"Give layers={{'teacher': ..., {', '.join(repr(m) + ': ...' for m in missing)}}}.")
    inputs = {"stage": "attribution", "models": digests(models), "data": data_digest(data), "layers": layers,
              "top_k": top_k, "quantile": quantile, "method": "gradcam", "target": "teacher", "noise": noise,
              "attack_epsilon": attack_epsilon, "thresholds": thresholds}

    def compute(_) -> StageOutput:
        found = attribution_consistency(models, data.inputs, data.labels, layers, data.masks, top_k=top_k,
                                        quantile=quantile, noise=noise, attack_epsilon=attack_epsilon, seed=seed,
                                        batch_size=batch_size, thresholds=thresholds)
        chosen, teacher_correct = found.thresholds, found.correct[TEACHER]
        figures: dict = {"thresholds": chosen, "target": "teacher", "method": "gradcam", "layers": layers,
                         "top_k": top_k, "n": len(data.labels), "models": {}}
        rows = []
        iou = f"iou_top{round(top_k * 100)}"
        for name, values in found.compared.items():
            correct = found.correct[name]
            both = correct & teacher_correct
            entry = {"accuracy": float(correct.double().mean()), "spearman": mean_ci(values["spearman"]),
                     "spearman_both_correct": mean_ci(values["spearman"][both]),
                     iou: mean_ci(values[iou]), f"{iou}_both_correct": mean_ci(values[iou][both]),
                     "cosine": mean_ci(values["cosine"]), "stability": mean_ci(found.stability[name]),
                     "stability_adversarial": mean_ci(found.stability_adversarial[name])}
            labels = None
            if chosen:
                evidence = values.get("student_evidence") if "evidence_threshold" in chosen else None
                labels = verdicts(correct, values["spearman"], chosen["agreement_threshold"], evidence,
                                  chosen.get("evidence_threshold"))
                entry["verdicts"] = verdict_rates(labels, data.difficulty)
            if data.masks is not None:
                entry["evidence"] = mean_ci(values["student_evidence"])
                entry["pointing"] = mean_ci(values["student_pointing"])
            figures["models"][name] = entry
            for i in range(len(data.labels)):
                row = {"model": name, "index": i, "label": int(data.labels[i]), "target": int(found.targets[i]),
                       "correct": bool(correct[i]), "teacher_correct": bool(teacher_correct[i]),
                       "stability": float(found.stability[name][i]),
                       "stability_adversarial": float(found.stability_adversarial[name][i]),
                       **{k: float(v[i]) for k, v in values.items()}}
                if labels is not None:
                    row["verdict"] = labels[i]
                rows.append(row)
        figures["models"][TEACHER] = {"accuracy": float(teacher_correct.double().mean()),
                                      "stability": mean_ci(found.stability[TEACHER]),
                                      "stability_adversarial": mean_ci(found.stability_adversarial[TEACHER])}
        if data.masks is not None:
            teacher_side = found.compared[next(iter(found.compared))]
            figures["models"][TEACHER].update(evidence=mean_ci(teacher_side["teacher_evidence"]),
                                              pointing=mean_ci(teacher_side["teacher_pointing"]))
        keep = slice(0, len(data.labels) if keep_maps is None else min(keep_maps, len(data.labels)))
        summary = {name: {"spearman": entry["spearman"]["mean"],
                          **({"right_for_wrong_reasons": entry["verdicts"]["overall"][RIGHT_FOR_WRONG_REASONS]}
                             if "verdicts" in entry else {})}
                   for name, entry in figures["models"].items() if name != TEACHER}
        return StageOutput(figures=figures, rows=rows, arrays={f"maps.{name}": m[keep] for name, m in
                                                                found.maps.items()}, summary=summary)

    return Stage("attribution", inputs, compute=compute)
