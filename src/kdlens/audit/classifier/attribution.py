"""The classifier audit's "attribution" stage: does each student look where the teacher looks, and is it right for
the right reasons?

Writes, under ``stages/attribution/``: ``figures.json`` (per model, the means with 95% bootstrap intervals the report
plots, and the thresholds used), ``rows.jsonl`` (one row per (model, example) with every per-example value), and
``arrays.safetensors`` (``maps.<model>``: the maps of the first ``keep_maps`` examples, all by default, for the
report's galleries and the review page).

Sharded: ``map`` runs :func:`kdlens.probes.consistency.example_consistency` on runs of whole batches (maps,
comparisons, stability, correctness: per-example tensors), ``reduce`` joins them and does what needs every example:
the verdict thresholds (a quantile of the baselines), the verdicts, the bootstrap intervals and ``keep_maps``. Each
example's values are the same however the examples are sharded: a shard starts on a batch boundary and runs the
same batches of ``batch_size`` (the FGSM step included, so its float32 gradients see the same batch), its noise is
its rows of one draw for the whole split from ``seed``, and the FGSM step clips to the whole split's range.
"""

from __future__ import annotations

from dataclasses import fields
from functools import cache

import torch
from torch import nn

from kdlens.audit.classifier.outputs import check_split, shards
from kdlens.audit.common import TEACHER, concat, data_digest, digests, mean_ci, pack, unpack
from kdlens.probes.consistency import Consistency, choose_thresholds, example_consistency, verdict_rates, verdicts
from kdlens.probes.robustness import uniform_noise
from kdlens.rundir import StageOutput
from kdlens.stages import Shard, Stage
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
    seed : draws the stability test's noise (one draw for the whole split)
    batch_size : examples per pass; shards are runs of whole batches, so sharding never changes a batch (the FGSM
        step's float32 gradients, and so the maps it gives, do depend on the batch)

    Returns
    -------
    Stage ``attribution``; its summary (per model: mean Spearman and, with verdicts, the share right for the wrong
    reasons).
    """
    check_split(data, "data")
    baselines = baselines or {}
    models = {TEACHER: teacher, **students, **baselines}
    missing = sorted(set(models) - set(layers))
    if missing:
        raise ValueError(f"Expected `layers` to name a layer for every model, but got none for {missing}. "
                         f"Give layers={{'teacher': ..., {', '.join(repr(m) + ': ...' for m in missing)}}}.")
    inputs = {"stage": "attribution", "models": digests(models), "data": data_digest(data), "layers": layers,
              "top_k": top_k, "quantile": quantile, "method": "gradcam", "target": "teacher", "noise": noise,
              "attack_epsilon": attack_epsilon, "thresholds": thresholds, "seed": seed, "batch_size": batch_size}
    bounds = (float(data.inputs.min()), float(data.inputs.max()))  # the FGSM step's clip range: the whole split's

    @cache
    def unit_noise() -> torch.Tensor:  # (n, C, H, W) in [-1, 1): the whole split's draw, made once per process
        return uniform_noise(data.inputs.shape, seed)

    def map_shard(shard: Shard, _) -> dict:
        rows = slice(shard.start, shard.stop)
        found = example_consistency(models, data.inputs[rows], data.labels[rows], layers,
                                    None if data.masks is None else data.masks[rows], top_k=top_k, noise=noise,
                                    attack_epsilon=attack_epsilon, batch_size=batch_size,
                                    unit_noise=unit_noise()[rows], bounds=bounds)
        return pack({f.name: getattr(found, f.name) for f in fields(found) if f.name != "thresholds"})

    def reduce(states: list[dict], _) -> StageOutput:
        found = Consistency(**unpack(concat(states)))  # every example's values, in order
        chosen, teacher_correct = choose_thresholds(found.compared, quantile, thresholds), found.correct[TEACHER]
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

    return Stage("attribution", inputs, shards=shards(len(data.labels), batch_size), map=map_shard, reduce=reduce,
                 examples=len(data.labels))
