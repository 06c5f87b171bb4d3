"""The audit's "reasons" stages: attribution consistency and robustness of each student against its teacher.

Each stage writes, under ``<run_dir>/stages/<stage>/``:

- ``figures.json``: per model, the means (with 95% bootstrap intervals) the report plots, and the thresholds used;
- ``examples.jsonl``: one row per (model, example) with every per-example value, for tables and drill-down;
- ``maps.safetensors`` (attribution): the maps of the first ``keep_maps`` examples (all by default) per model, for
  the report's galleries and the review page.

and records itself in ``<run_dir>/manifest.json`` (:class:`kdlens.stages.Stages`), so a second call with the same
inputs loads instead of recomputing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from kdlens import measures as M
from kdlens.audit.common import TEACHER, AuditData, data_digest, digests, mean_ci, write_stage
from kdlens.probes import GradCAM, resolve_targets
from kdlens.probes.consistency import VERDICTS, baseline_thresholds, compare_maps, verdict_rates, verdicts
from kdlens.probes.robustness import adversarial_agreement, counterfactual_flips, fgsm, pgd, predictions
from kdlens.stages import Stages
from kdlens.subjects import Classifier


def _maps(model: nn.Module, layer: str, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    method = GradCAM(model, layer)
    return torch.cat([method.attribute(x, t).detach().cpu()
                      for x, t in zip(inputs.split(batch_size), targets.split(batch_size), strict=True)])


def attribution_stage(run_dir: str | Path, teacher: nn.Module, students: dict[str, nn.Module], data: AuditData,
                      layers: dict[str, str], baselines: dict[str, nn.Module] | None = None, top_k: float = 0.2,
                      quantile: float = 0.1, noise: float = 8 / 255, attack_epsilon: float = 4 / 255,
                      keep_maps: int | None = None, seed: int = 0, batch_size: int = 256,
                      thresholds: dict[str, float] | None = None) -> dict:
    """Grad-CAM maps of the teacher, each student and each baseline for the teacher's predicted class, compared.

    Parameters
    ----------
    run_dir : the run directory (stage ``attribution``)
    teacher, students : the models; ``students`` maps names to modules
    data : AuditData (masks turn on evidence scores, difficulty the breakdown)
    layers : model name (``"teacher"``, each student's and baseline's name) -> the conv layer to explain
    baselines : e.g. ``{"teacher_reseeded": ..., "untrained_student": ...}``; ``teacher_reseeded`` sets the
        agreement threshold and the teacher's own evidence share sets the evidence one (:func:`baseline_thresholds`)
    top_k : fraction of positions for the top-k IoU
    quantile : baseline quantile read as the threshold
    noise : half-width of the uniform input noise for the stability test (each model's map on x + U(-noise, noise)
        against its map on x, Spearman), in input units
    attack_epsilon : L-inf budget of the FGSM step for the adversarial stability test (each model's map on its own
        FGSM example, pushed away from the target class, against its map on x); inputs stay within the data's range
    thresholds : ``{"agreement_threshold": ..., "evidence_threshold": ...}`` to use when there is no
        ``teacher_reseeded`` baseline to derive them from (without either, no verdicts)
    keep_maps : how many examples' maps to save (None: all; an 8 x 8 map is 256 bytes per model and example)

    Returns
    -------
    dict: the stage summary recorded in the manifest (per model: mean Spearman, IoU, evidence, verdict shares).
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
    folder = Path(run_dir) / "stages" / "attribution"

    def compute() -> dict:
        logits = {name: Classifier(model, name).logits(data.inputs) for name, model in models.items()}
        targets = resolve_targets("teacher", teacher_logits=logits[TEACHER])
        maps = {name: _maps(model, layers[name], data.inputs, targets, batch_size) for name, model in models.items()}
        g = torch.Generator().manual_seed(seed)
        noisy = data.inputs + noise * (2 * torch.rand(data.inputs.shape, generator=g) - 1)
        stability = {name: M.map_spearman(maps[name], _maps(model, layers[name], noisy, targets, batch_size),
                                          reduction="none") for name, model in models.items()}
        bounds = (float(data.inputs.min()), float(data.inputs.max()))
        adversarial = {name: M.map_spearman(maps[name], _maps(model, layers[name], fgsm(
            model, data.inputs, targets, attack_epsilon, bounds=bounds), targets, batch_size), reduction="none")
            for name, model in models.items()}
        compared = {name: compare_maps(maps[TEACHER], maps[name], data.masks, top_k)
                    for name in models if name != TEACHER}
        teacher_side = compared[next(iter(compared))]  # every comparison scores the same teacher maps
        teacher_evidence = teacher_side.get("teacher_evidence")
        chosen = (baseline_thresholds(compared["teacher_reseeded"]["spearman"], teacher_evidence, quantile)
                  if "teacher_reseeded" in compared else dict(thresholds or {}))
        teacher_correct = logits[TEACHER].argmax(-1) == data.labels
        figures: dict = {"thresholds": chosen, "target": "teacher", "method": "gradcam", "layers": layers,
                         "top_k": top_k, "n": len(data.labels), "models": {}}
        rows = []
        iou = f"iou_top{round(top_k * 100)}"
        for name, values in compared.items():
            correct = logits[name].argmax(-1) == data.labels
            both = correct & teacher_correct
            entry = {"accuracy": float(correct.double().mean()), "spearman": mean_ci(values["spearman"]),
                     "spearman_both_correct": mean_ci(values["spearman"][both]),
                     iou: mean_ci(values[iou]), f"{iou}_both_correct": mean_ci(values[iou][both]),
                     "cosine": mean_ci(values["cosine"]), "stability": mean_ci(stability[name]),
                     "stability_adversarial": mean_ci(adversarial[name])}
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
                row = {"model": name, "index": i, "label": int(data.labels[i]), "target": int(targets[i]),
                       "correct": bool(correct[i]), "teacher_correct": bool(teacher_correct[i]),
                       "stability": float(stability[name][i]), "stability_adversarial": float(adversarial[name][i]),
                       **{k: float(v[i]) for k, v in values.items()}}
                if labels is not None:
                    row["verdict"] = labels[i]
                rows.append(row)
        figures["models"][TEACHER] = {"accuracy": float(teacher_correct.double().mean()),
                                      "stability": mean_ci(stability[TEACHER]),
                                      "stability_adversarial": mean_ci(adversarial[TEACHER])}
        if data.masks is not None:
            figures["models"][TEACHER].update(evidence=mean_ci(teacher_evidence),
                                              pointing=mean_ci(teacher_side["teacher_pointing"]))
        keep = slice(0, len(data.labels) if keep_maps is None else min(keep_maps, len(data.labels)))
        write_stage(folder, figures, rows, {f"maps.{name}": m[keep] for name, m in maps.items()})
        return {name: {"spearman": entry["spearman"]["mean"],
                       **({"right_for_wrong_reasons": entry["verdicts"]["overall"][VERDICTS[1]]}
                          if "verdicts" in entry else {})}
                for name, entry in figures["models"].items() if name != TEACHER}

    return Stages(run_dir).run("attribution", inputs, compute, folder=folder)


def robustness_stage(run_dir: str | Path, teacher: nn.Module, students: dict[str, nn.Module], data: AuditData,
                     epsilon: float = 4 / 255, steps: int = 10, seed: int = 0, epsilons: Sequence[float] = ()) -> dict:
    """PGD (L-inf ``epsilon``, ``steps`` steps) against the teacher and against each student, and, when ``data``
    has counterfactuals, the cue-flip test.

    Per student: accuracy under its own attack, teacher-student agreement on inputs crafted against the student and
    against the teacher, and (counterfactuals) how often the student alone changes its answer when only the cue
    changes, and how often it follows the edited cue. ``epsilons`` adds a curve: at each budget, every model's
    accuracy under its own attack and each student's agreement with the teacher on it (``figures["curve"]``).
    """
    models = {TEACHER: teacher, **students}
    epsilons = sorted({float(e) for e in epsilons})
    inputs = {"stage": "robustness", "epsilon": epsilon, "steps": steps, "seed": seed, "models": digests(models),
              "data": data_digest(data), "epsilons": epsilons}
    folder = Path(run_dir) / "stages" / "robustness"

    def compute() -> dict:
        on_teacher = pgd(teacher, data.inputs, data.labels, epsilon, steps=steps, seed=seed)
        teacher_robust = float((predictions(teacher, on_teacher) == data.labels).double().mean())
        figures: dict = {"epsilon": epsilon, "steps": steps, "attack": "pgd", "n": len(data.labels),
                         "teacher_robust_accuracy": teacher_robust, "models": {}}
        rows = []
        for name, student in students.items():
            values = adversarial_agreement(teacher, student, data.inputs, data.labels, epsilon, attack="pgd",
                                           teacher_attack=on_teacher, steps=steps, seed=seed)
            if data.counterfactuals is not None:
                values.update(counterfactual_flips(teacher, student, data.inputs, data.counterfactuals,
                                                   data.counterfactual_targets))
            figures["models"][name] = {key: mean_ci(value) for key, value in values.items()}
            rows += [{"model": name, "index": i, **{k: float(v[i]) for k, v in values.items()}}
                     for i in range(len(data.labels))]
        if epsilons:
            figures["curve"] = _curve(teacher, students, data, epsilons, epsilon, steps, seed, figures, on_teacher)
        write_stage(folder, figures, rows)
        return {name: {"robust_accuracy": entry["student_correct"]["mean"],
                       "agree_on_student_attack": entry["agree_on_student_attack"]["mean"],
                       **({"cue_flips": entry["student_only_flips"]["mean"]} if "student_only_flips" in entry else {})}
                for name, entry in figures["models"].items()}

    return Stages(run_dir).run("robustness", inputs, compute, folder=folder)


def _curve(teacher: nn.Module, students: dict[str, nn.Module], data: AuditData, epsilons: list[float],
           epsilon: float, steps: int, seed: int, figures: dict, on_teacher: torch.Tensor) -> dict:
    """Accuracy under attack vs budget for every model, agreement under the student's attack for each student;
    the headline ``epsilon``'s values are reused, not recomputed."""
    curve: dict = {"epsilons": epsilons, "accuracy": {}, "agreement": {}}
    attacked = {epsilon: on_teacher}
    curve["accuracy"][TEACHER] = [float((predictions(teacher, attacked[e] if e in attacked else pgd(
        teacher, data.inputs, data.labels, e, steps=steps, seed=seed)) == data.labels).double().mean())
        for e in epsilons]
    for name, student in students.items():
        accuracy, agreement = [], []
        for e in epsilons:
            if e == epsilon:
                entry = figures["models"][name]
                accuracy.append(entry["student_correct"]["mean"])
                agreement.append(entry["agree_on_student_attack"]["mean"])
                continue
            adv = pgd(student, data.inputs, data.labels, e, steps=steps, seed=seed)
            own = predictions(student, adv)
            accuracy.append(float((own == data.labels).double().mean()))
            agreement.append(float((own == predictions(teacher, adv)).double().mean()))
        curve["accuracy"][name], curve["agreement"][name] = accuracy, agreement
    return curve
