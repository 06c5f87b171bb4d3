"""The classifier audit's "representations" stage: how close each student's layers are to the teacher's.

It writes ``stages/representations/figures.json``: the linear CKA matrix (teacher layers x student layers) of every
student, each student layer's best-matching teacher layer, and their mean. Sharded: ``map`` over runs of whole
batches feeds :class:`kdlens.measures.CKAMatrix` co-moments, ``reduce`` merges them.
"""

from __future__ import annotations

from torch import nn

from kdlens import measures as M
from kdlens.audit.classifier.outputs import check_models, check_split, shards
from kdlens.audit.common import TEACHER, data_digest, digests
from kdlens.probes.representations import POOL_NOTE, layer_features
from kdlens.rundir import StageOutput
from kdlens.stages import Shard, Stage
from kdlens.subjects import Classifier
from kdlens.tasks.files import EvalSplit


def representations_stage(teacher: nn.Module, students: dict[str, nn.Module], data: EvalSplit,
                          teacher_layers: list[str], student_layers: dict[str, list[str]],
                          batch_size: int = 256) -> Stage:
    """Linear CKA between every teacher layer and every layer of each student, on ``data.inputs``.

    Parameters
    ----------
    teacher, students : the models; ``students`` maps names to modules
    data : EvalSplit; only the inputs are used
    teacher_layers : ``named_modules()`` names of the teacher's layers to compare
    student_layers : student name -> its layers to compare
    batch_size : examples per forward pass (does not change the result)

    Notes
    -----
    Conv maps (n, C, H, W) are global-average-pooled to (n, C) before CKA (position-free: teacher and student maps
    may differ in resolution); (n, T, d) are averaged over T. Biased (Kornblith et al. 2019) linear CKA, from the
    co-moments of :class:`kdlens.measures.CKAMatrix` fed batch by batch and merged over shards.

    Returns
    -------
    Stage ``representations``; its summary: student -> ``cka_mean_best``, the mean over the student's layers of the
    CKA with its best-matching teacher layer.
    """
    check_split(data, "data")
    missing = sorted(set(students) - set(student_layers))
    if missing:
        raise ValueError(f"Expected `student_layers` to list layers for every student, but got none for {missing}.")
    if not teacher_layers or any(not student_layers[name] for name in students):
        raise ValueError("Expected at least one teacher layer and one layer per student, but got an empty list.")
    if len(data.inputs) < 2:
        raise ValueError(f"Expected at least 2 examples for CKA, but got {len(data.inputs)}.")
    models = check_models(teacher, students, data.inputs)
    for layer in teacher_layers:
        Classifier(teacher, TEACHER).resolve(layer)  # KeyError listing close names
    for name in students:
        for layer in student_layers[name]:
            Classifier(students[name], name).resolve(layer)
    layers = {TEACHER: list(teacher_layers), **{name: list(student_layers[name]) for name in students}}
    inputs = {"stage": "representations", "models": digests(models), "data": data_digest(data), "layers": layers,
              "kernel": "linear", "debiased": False, "pool": "global_average"}

    def new_metric(name: str) -> M.CKAMatrix:
        return M.CKAMatrix(teacher_layers, student_layers[name])

    def map_shard(shard: Shard, _) -> dict:
        metrics = {name: new_metric(name) for name in students}
        for batch in data.inputs[shard.start:shard.stop].split(batch_size):
            reference = layer_features(teacher, TEACHER, batch, teacher_layers)
            for name, student in students.items():
                metrics[name].update(reference, layer_features(student, name, batch, student_layers[name]))
        return {f"{name}.{k}": v for name, metric in metrics.items() for k, v in metric.metric_state.items()}

    def reduce(states: list[dict], _) -> StageOutput:
        figures: dict = {"kernel": "linear", "debiased": False, "pool_note": POOL_NOTE, "n": len(data.inputs),
                         "teacher_layers": list(teacher_layers), "students": {}}
        for name in students:
            cka = M.merge_states(new_metric(name), states, f"{name}.").compute()  # (teacher, student layers) float64
            best, where = cka.max(dim=0)  # over teacher layers, (student layers,)
            figures["students"][name] = {
                "student_layers": list(student_layers[name]), "cka": cka.tolist(),
                "best_teacher_layer": {layer: teacher_layers[int(i)]
                                       for layer, i in zip(student_layers[name], where, strict=True)},
                "best_cka": {layer: float(v) for layer, v in zip(student_layers[name], best, strict=True)},
                "cka_mean_best": float(best.mean())}
        summary = {name: {"cka_mean_best": entry["cka_mean_best"]} for name, entry in figures["students"].items()}
        return StageOutput(figures=figures, summary=summary)

    return Stage("representations", inputs, shards=shards(len(data.inputs), batch_size), map=map_shard,
                 reduce=reduce, examples=len(data.inputs))
