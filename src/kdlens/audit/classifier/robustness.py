"""The classifier audit's "robustness" stage: PGD against the teacher and each student, and the cue-flip test.

Writes, under ``stages/robustness/``: ``figures.json`` (per student, the means with 95% bootstrap intervals, the
teacher's robust accuracy, and the curve over budgets) and ``rows.jsonl`` (one row per (student, example)).

Not sharded: PGD's random starts are drawn for the whole split from one seed; shards would draw other starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from kdlens.audit.common import TEACHER, data_digest, digests, mean_ci
from kdlens.probes.robustness import adversarial_agreement, counterfactual_flips, pgd, predictions, robustness_curve
from kdlens.rundir import StageOutput
from kdlens.stages import Stage
from kdlens.tasks.files import EvalSplit


def robustness_stage(teacher: nn.Module, students: dict[str, nn.Module], data: EvalSplit, epsilon: float = 4 / 255,
                     steps: int = 10, seed: int = 0, epsilons: Sequence[float] = (),
                     bounds: tuple[float, float] = (0.0, 1.0)) -> Stage:
    """PGD (L-inf ``epsilon``, ``steps`` steps) against the teacher and against each student, and, when ``data``
    has counterfactuals, the cue-flip test.

    Per student: accuracy under its own attack, teacher-student agreement on inputs crafted against the student and
    against the teacher, and (counterfactuals) how often the student alone changes its answer when only the cue
    changes, and how often it follows the edited cue. ``epsilons`` adds a curve: at each budget, every model's
    accuracy under its own attack and each student's agreement with the teacher on it (``figures["curve"]``,
    :func:`kdlens.probes.robustness.robustness_curve`).
    ``bounds`` is the inputs' valid range (low, high), which every attack clips to; inputs outside it are refused.

    Returns
    -------
    Stage ``robustness``; its summary (per student: robust accuracy, agreement under its own attack, cue flips).
    """
    models = {TEACHER: teacher, **students}
    epsilons = sorted({float(e) for e in epsilons})
    inputs = {"stage": "robustness", "epsilon": epsilon, "steps": steps, "seed": seed, "models": digests(models),
              "data": data_digest(data), "epsilons": epsilons, "bounds": list(bounds)}

    def compute(_) -> StageOutput:
        on_teacher = pgd(teacher, data.inputs, data.labels, epsilon, steps=steps, seed=seed, bounds=bounds)
        teacher_robust = float((predictions(teacher, on_teacher) == data.labels).double().mean())
        figures: dict = {"epsilon": epsilon, "steps": steps, "attack": "pgd", "n": len(data.labels),
                         "teacher_robust_accuracy": teacher_robust, "models": {}}
        rows = []
        for name, student in students.items():
            values = adversarial_agreement(teacher, student, data.inputs, data.labels, epsilon, attack="pgd",
                                           teacher_attack=on_teacher, steps=steps, seed=seed, bounds=bounds)
            if data.counterfactuals is not None:
                values.update(counterfactual_flips(teacher, student, data.inputs, data.counterfactuals,
                                                   data.counterfactual_targets))
            figures["models"][name] = {key: mean_ci(value) for key, value in values.items()}
            rows += [{"model": name, "index": i, **{k: float(v[i]) for k, v in values.items()}}
                     for i in range(len(data.labels))]
        if epsilons:
            headline = {name: (entry["student_correct"]["mean"], entry["agree_on_student_attack"]["mean"])
                        for name, entry in figures["models"].items()}
            figures["curve"] = robustness_curve(teacher, students, data.inputs, data.labels, epsilons, steps=steps,
                                                seed=seed, headline_epsilon=epsilon, headline=headline,
                                                teacher_attack=on_teacher, bounds=bounds)
        summary = {}
        for name, entry in figures["models"].items():
            summary[name] = {"robust_accuracy": entry["student_correct"]["mean"],
                             "agree_on_student_attack": entry["agree_on_student_attack"]["mean"]}
            if "student_only_flips" in entry:
                summary[name]["cue_flips"] = entry["student_only_flips"]["mean"]
        return StageOutput(figures=figures, rows=rows, summary=summary)

    return Stage("robustness", inputs, compute=compute)

