"""The classifier audit: a teacher against its students (and baselines) on labelled inputs.

:meth:`ClassifierKind.prepare` checks everything it can before any long work (files, data, class counts, finite
outputs, layer names); the stages then run in order (outputs, representations, attribution, robustness, gallery),
each cached in the run directory, so a second run (after a kill, or after adding a student) loads what was done and
computes only what is missing.
"""

from __future__ import annotations

import torch
from torch import nn

from kdlens.audit.classifier.attribution import attribution_stage
from kdlens.audit.classifier.config import AuditConfig, ImageFolderAuditData, ShapesAuditData, TensorAuditData
from kdlens.audit.classifier.gallery import gallery_stage
from kdlens.audit.classifier.headline import headline
from kdlens.audit.classifier.layers import default_layers
from kdlens.audit.classifier.outputs import check_models, outputs_stage
from kdlens.audit.classifier.representations import representations_stage
from kdlens.audit.classifier.robustness import robustness_stage
from kdlens.audit.common import TEACHER
from kdlens.audit.kind import Headline, Prepared
from kdlens.audit.scorecard import Wording
from kdlens.probes.outputs import check_logits
from kdlens.rundir import RunDir
from kdlens.stages import StageRunner
from kdlens.subjects import Classifier
from kdlens.subjects.sources import load_models, task_defaults
from kdlens.tasks.files import EvalSplit


def load_data(data: ShapesAuditData | TensorAuditData | ImageFolderAuditData) -> dict[str, EvalSplit]:
    """The splits the config names, the primary split first."""
    if isinstance(data, ShapesAuditData):
        from kdlens.tasks.shapes import SHAPES, make_split, other_cues, with_cues

        out = {}
        for split in data.splits:
            drawn = make_split(data.shapes, split, data.n)
            edited_to = other_cues(drawn, seed=data.counterfactual_seed)
            out[split] = EvalSplit(drawn.images, drawn.labels, drawn.masks, drawn.difficulty,
                                   with_cues(drawn, edited_to).images, edited_to, name=split,
                                   classes=list(SHAPES[:data.shapes.n_classes]))
        return out
    from kdlens.tasks.files import load_image_folder, load_tensor_split

    out = {}
    for split, path in data.splits.items():
        if isinstance(data, TensorAuditData):
            loaded = load_tensor_split(path, name=split)
        else:
            loaded = load_image_folder(path, image_size=data.image_size, masks=data.masks.get(split), name=split)
        out[split] = subset(loaded, data.n)
    return out


def subset(data: EvalSplit, n: int | None) -> EvalSplit:
    """The first ``n`` examples of ``data`` (all of them when ``n`` is None or larger)."""
    if n is None or n >= len(data.inputs):
        return data
    keep = slice(0, n)
    return EvalSplit(*(None if t is None else t[keep] for t in (
        data.inputs, data.labels, data.masks, data.difficulty, data.counterfactuals, data.counterfactual_targets)),
        name=data.name, classes=data.classes)


def _lab_data(config: AuditConfig) -> AuditConfig:
    """Shapes data for a lab teacher is drawn as the lab drew it, unless the config says how."""
    if not isinstance(config.data, ShapesAuditData) or "shapes" in config.data.model_fields_set:
        return config
    defaults = task_defaults(config.teacher, "classifier")
    if "shapes" not in defaults:
        return config
    return config.model_copy(update={"data": config.data.model_copy(update={"shapes": defaults["shapes"]})})


def _models(config: AuditConfig, teacher, students, baselines, progress: bool,
            device: str) -> dict[str, nn.Module]:
    """Teacher, students and baselines by name: those passed in, the rest built from the config's sources."""
    if teacher is None and config.teacher is None:
        raise ValueError("Expected a teacher, but got none. Give `teacher:` in the config or teacher=... to run().")
    if students is None and not config.students:
        raise ValueError("Expected at least one student, but got none. Give `students:` in the config "
                         "(name: source) or students={...} to run().")
    sources = {}
    if teacher is None:
        sources[TEACHER] = config.teacher
    if students is None:
        sources.update(config.students)
    if baselines is None:
        sources.update(config.baselines)
    torch.manual_seed(config.seed)  # a fresh architecture's initial weights come from the run's seed
    built = load_models(sources, "classifier", device, progress)
    teacher = teacher if teacher is not None else built[TEACHER]
    students = dict(students) if students is not None else {n: built[n] for n in config.students}
    baselines = dict(baselines) if baselines is not None else {n: built[n] for n in config.baselines}
    for name in students:
        if name == TEACHER or name in baselines:
            raise ValueError(f"Expected distinct model names, but {name!r} names a student and the teacher or a "
                             f"baseline. Rename it.")
    return {TEACHER: teacher, **students, **baselines}, list(students), list(baselines)


def _layers(config: AuditConfig, models: dict[str, nn.Module], probe: torch.Tensor) -> dict[str, dict]:
    """Each model's layers: as configured (checked to exist), else picked by :func:`default_layers`."""
    unknown = sorted(set(config.layers) - set(models))
    if unknown:
        raise ValueError(f"Expected `layers` to name models of this audit ({', '.join(models)}), but got "
                         f"{unknown}.")
    out = {}
    for name, model in models.items():
        picked = default_layers(model, probe)
        given = config.layers.get(name)
        chosen = {"attribution": given.attribution if given and given.attribution else picked["attribution"],
                  "representations": given.representations if given and given.representations
                  else picked["representations"]}
        subject = Classifier(model, name)
        for layer in [chosen["attribution"] or "", *chosen["representations"]]:
            if layer:
                subject.resolve(layer)  # KeyError listing the model's layers
        if config.probes.attribution.enabled and chosen["attribution"] is None:
            raise ValueError(f"Expected model {name!r} to have a layer with a spatial (n, C, H, W) output for "
                             f"Grad-CAM, but found none. Name one under layers: {{{name}: {{attribution: ...}}}}, "
                             f"or turn the probe off (probes: {{attribution: {{enabled: false}}}}).")
        out[name] = chosen
    return out


def _check_data(splits: dict[str, EvalSplit], models: dict[str, nn.Module]) -> None:
    for split, data in splits.items():
        if len(data.inputs) == 0:
            raise ValueError(f"Expected split {split!r} to hold examples, but got 0. Check its path or `n`.")
    probe = next(iter(splits.values())).inputs[:64]
    check_models(models[TEACHER], {k: v for k, v in models.items() if k != TEACHER}, probe)
    classes = Classifier(models[TEACHER]).logits(probe[:2]).shape[-1]
    for split, data in splits.items():
        if int(data.labels.max()) >= classes or int(data.labels.min()) < 0:
            raise ValueError(f"Expected the labels of split {split!r} to lie in [0, {classes - 1}] (the models "
                             f"have {classes} classes), but got labels from {int(data.labels.min())} to "
                             f"{int(data.labels.max())}.")
    for name, model in models.items():
        check_logits(Classifier(model, name).logits(probe), name, next(iter(splits)))


class ClassifierKind:
    """Classifiers on labelled inputs (shapes, your tensors, your image folders)."""

    name = "classifier"
    config_type = AuditConfig
    tasks = ("shapes", "tensors", "image_folder")
    lines = ("outputs", "representations", "attribution", "robustness", "gallery")

    def prepare(self, config: AuditConfig, teacher, students, baselines, progress: bool,
                device: str = "cpu") -> Prepared:
        config = _lab_data(config)
        splits = load_data(config.data)
        models, student_names, baseline_names = _models(config, teacher, students, baselines, progress, device)
        for model in models.values():
            model.eval()
        _check_data(splits, models)
        primary = next(iter(splits.values()))
        layers = _layers(config, models, primary.inputs[:2])
        return Prepared(config, models, student_names, baseline_names, {"splits": splits, "layers": layers})

    def run_stages(self, audit: Prepared, runner: StageRunner) -> None:
        config, models, layers = audit.config, audit.models, audit.extra["layers"]
        probes, splits = config.probes, audit.extra["splits"]
        primary_name, primary = next(iter(splits.items()))
        teacher = models[TEACHER]
        students = {n: models[n] for n in audit.students}
        baselines = {n: models[n] for n in audit.baselines}
        runner.run(outputs_stage(teacher, {**students, **baselines}, splits, n_bins=probes.outputs.n_bins,
                                 batch_size=config.batch_size))
        if probes.representations.enabled:
            runner.run(representations_stage(
                teacher, {**students, **baselines}, subset(primary, probes.representations.n),
                layers[TEACHER]["representations"], {n: layers[n]["representations"] for n in [*students, *baselines]},
                batch_size=config.batch_size))
        else:
            runner.skip("representations")
        if probes.attribution.enabled:
            probe = probes.attribution
            thresholds = None
            if "teacher_reseeded" not in baselines and probe.agreement_threshold is not None:
                thresholds = {"agreement_threshold": probe.agreement_threshold}
                if probe.evidence_threshold is not None:
                    thresholds["evidence_threshold"] = probe.evidence_threshold
            runner.run(attribution_stage(
                teacher, students, subset(primary, probe.n), {n: layers[n]["attribution"] for n in models}, baselines,
                top_k=probe.top_k, quantile=probe.quantile, seed=config.seed, batch_size=config.batch_size,
                thresholds=thresholds))
        else:
            runner.skip("attribution")
        if probes.robustness.enabled:
            probe = probes.robustness
            runner.run(robustness_stage(teacher, students, subset(primary, probe.n), epsilon=probe.epsilon,
                                        steps=probe.steps, seed=config.seed, epsilons=probe.epsilons,
                                        bounds=probe.bounds, batch_size=config.batch_size))
        else:
            runner.skip("robustness")
        hashes = {name: runner.inputs_hash(name) for name in ("outputs", "representations", "attribution",
                                                               "robustness") if runner.inputs_hash(name)}
        runner.run(gallery_stage(runner.run_dir, primary, audit.students, primary_name, hashes))

    def headline(self, audit: Prepared, run: RunDir) -> Headline:
        config, splits = audit.config, audit.extra["splits"]
        primary_name, primary = next(iter(splits.items()))
        data = {"primary": primary_name, "shifted": config.data.shifted_split,
                "splits": {k: len(v.labels) for k, v in splits.items()}, "has_masks": primary.masks is not None,
                "has_counterfactuals": primary.counterfactuals is not None, "task": config.data.task,
                "classes": primary.classes}
        roles = {TEACHER: "teacher", **dict.fromkeys(audit.students, "student"),
                 **dict.fromkeys(audit.baselines, "baseline")}
        models = {name: {"parameters": sum(p.numel() for p in model.parameters()), "role": roles[name]}
                  for name, model in audit.models.items()}
        return headline(run, primary, data, audit.students, audit.baselines, {
            "layers": audit.extra["layers"], "models": models, "probes": config.probes.model_dump(mode="json")})

    def wording(self, audit: Prepared) -> Wording:
        has_masks = next(iter(audit.extra["splits"].values())).masks is not None
        where = ("its evidence disagrees with the teacher's or lies outside the object" if has_masks
                 else "its evidence disagrees with the teacher's")
        return Wording(wrong_reasons=where)


CLASSIFIER = ClassifierKind()
