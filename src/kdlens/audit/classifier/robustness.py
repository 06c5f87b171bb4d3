"""The classifier audit's "robustness" stage: PGD against the teacher and each student, and the cue-flip test.

Writes, under ``stages/robustness/``: ``figures.json`` (per student, the means with 95% bootstrap intervals, the
teacher's robust accuracy, and the curve over budgets) and ``rows.jsonl`` (one row per (student, example)).

Sharded: ``map`` attacks runs of whole batches and records per-example 0/1 values (each model on its own attack,
agreement, cue flips, and each budget of the curve), ``reduce`` joins them and takes the means and their bootstrap
intervals. Each example's values are the same however the examples are sharded: a shard starts on a batch boundary
and attacks in the same batches of ``batch_size``, and PGD's random start is the shard's rows of one draw for the
whole split from ``seed`` (:func:`kdlens.probes.robustness.uniform_noise`), the same for every model and budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch
from torch import nn

from kdlens.audit.classifier.outputs import check_split, shards
from kdlens.audit.common import TEACHER, concat, data_digest, digests, mean_ci, pack, unpack
from kdlens.probes.robustness import (
    adversarial_agreement,
    counterfactual_flips,
    pgd,
    predictions,
    robustness_curve,
    uniform_noise,
)
from kdlens.rundir import StageOutput
from kdlens.stages import Shard, Stage
from kdlens.tasks.files import EvalSplit


def robustness_stage(teacher: nn.Module, students: dict[str, nn.Module], data: EvalSplit, epsilon: float = 4 / 255,
                     steps: int = 10, seed: int = 0, epsilons: Sequence[float] = (),
                     bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 256) -> Stage:
    """PGD (L-inf ``epsilon``, ``steps`` steps) against the teacher and against each student, and, when ``data``
    has counterfactuals, the cue-flip test.

    Per student: accuracy under its own attack, teacher-student agreement on inputs crafted against the student and
    against the teacher, and (counterfactuals) how often the student alone changes its answer when only the cue
    changes, and how often it follows the edited cue. ``epsilons`` adds a curve: at each budget, every model's
    accuracy under its own attack and each student's agreement with the teacher on it (``figures["curve"]``,
    :func:`kdlens.probes.robustness.robustness_curve`).
    ``bounds`` is the inputs' valid range (low, high), which every attack clips to; inputs outside it are refused.
    ``batch_size`` is the examples per pass; shards are runs of whole batches, so sharding never changes a batch.

    Returns
    -------
    Stage ``robustness``; its summary (per student: robust accuracy, agreement under its own attack, cue flips).
    """
    check_split(data, "data")
    models = {TEACHER: teacher, **students}
    epsilons = sorted({float(e) for e in epsilons})
    inputs = {"stage": "robustness", "epsilon": epsilon, "steps": steps, "seed": seed, "models": digests(models),
              "data": data_digest(data), "epsilons": epsilons, "bounds": list(bounds), "batch_size": batch_size}

    @cache
    def unit_start() -> torch.Tensor:  # (n, ...) in [-1, 1): PGD's start for the whole split, made once per process
        return uniform_noise(data.inputs.shape, seed)

    def map_shard(shard: Shard, _) -> dict:
        rows = slice(shard.start, shard.stop)
        x, y = data.inputs[rows], data.labels[rows]
        attack = {"steps": steps, "bounds": bounds, "batch_size": batch_size, "start": unit_start()[rows]}
        on_teacher = pgd(teacher, x, y, epsilon, **attack)
        state: dict = {"teacher_correct": (predictions(teacher, on_teacher, batch_size) == y).float(), "models": {}}
        for name, student in students.items():
            values = adversarial_agreement(teacher, student, x, y, epsilon, attack="pgd", teacher_attack=on_teacher,
                                           **attack)
            if data.counterfactuals is not None:
                edited_to = None if data.counterfactual_targets is None else data.counterfactual_targets[rows]
                values.update(counterfactual_flips(teacher, student, x, data.counterfactuals[rows], edited_to,
                                                   batch_size=batch_size))
            state["models"][name] = values
        if epsilons:
            headline = {name: (values["student_correct"], values["agree_on_student_attack"])
                        for name, values in state["models"].items()}
            curve = robustness_curve(teacher, students, x, y, epsilons, headline_epsilon=epsilon, headline=headline,
                                     teacher_attack=on_teacher, reduction="none", **attack)
            state["curve"] = {kind: {name: {str(j): v for j, v in enumerate(per_budget)}
                                     for name, per_budget in curve[kind].items()} for kind in ("accuracy", "agreement")}
        return pack(state)

    def reduce(states: list[dict], _) -> StageOutput:
        found = unpack(concat(states))  # every example's values, in order
        teacher_robust = float(found["teacher_correct"].double().mean())
        figures: dict = {"epsilon": epsilon, "steps": steps, "attack": "pgd", "n": len(data.labels),
                         "teacher_robust_accuracy": teacher_robust, "models": {}}
        rows = []
        for name in students:
            values = found["models"][name]
            figures["models"][name] = {key: mean_ci(value) for key, value in values.items()}
            rows += [{"model": name, "index": i, **{k: float(v[i]) for k, v in values.items()}}
                     for i in range(len(data.labels))]
        if epsilons:
            figures["curve"] = {"epsilons": epsilons, **{
                kind: {name: [float(v.double().mean()) for v in per_budget.values()]
                       for name, per_budget in found["curve"].get(kind, {}).items()}  # no students: no agreement
                for kind in ("accuracy", "agreement")}}
        summary = {}
        for name, entry in figures["models"].items():
            summary[name] = {"robust_accuracy": entry["student_correct"]["mean"],
                             "agree_on_student_attack": entry["agree_on_student_attack"]["mean"]}
            if "student_only_flips" in entry:
                summary[name]["cue_flips"] = entry["student_only_flips"]["mean"]
        return StageOutput(figures=figures, rows=rows, summary=summary)

    return Stage("robustness", inputs, shards=shards(len(data.labels), batch_size), map=map_shard, reduce=reduce,
                 examples=len(data.labels))
