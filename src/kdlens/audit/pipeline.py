"""``kdlens audit CONFIG``: a teacher against its students, every probe as a cached stage, then ``results.json``.

:func:`run` checks everything it can before any long work (the config, files, data, class counts, finite outputs,
layer names), then runs the stages in order (outputs, representations, attribution, robustness, gallery). Each
stage is recorded in ``manifest.json`` with the hash of its inputs, so a second run (after a kill, or after adding
a student) loads what was done and computes only what is missing; a stage that fails leaves the ones before it
on disk.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import yaml
from torch import nn

from kdlens import io
from kdlens.audit.common import TEACHER, AuditData, cached_or_seconds, forget_disabled, read_rows
from kdlens.audit.config import AuditConfig, ImageFolderAuditData, ShapesAuditData, TensorAuditData
from kdlens.audit.gallery import gallery_stage
from kdlens.audit.layers import default_layers
from kdlens.audit.lm_config import LMAuditConfig, is_reasoning
from kdlens.audit.outputs import _check_logits, _check_models, outputs_stage, representations_stage
from kdlens.audit.reasons import attribution_stage, robustness_stage
from kdlens.audit.results import build_results
from kdlens.config import dump_yaml, load_yaml, validate
from kdlens.distill.run import ModelSource
from kdlens.progress import stage_display
from kdlens.stages import MANIFEST
from kdlens.subjects import Classifier

STAGES = ("outputs", "representations", "attribution", "robustness", "gallery")


def as_config(config: AuditConfig | LMAuditConfig | dict | str | Path) -> AuditConfig | LMAuditConfig:
    """An AuditConfig (classifiers) or an LMAuditConfig (``data: {task: reasoning}``) from itself, a dict, or a YAML
    file's path."""
    if isinstance(config, AuditConfig | LMAuditConfig):
        return config
    if isinstance(config, dict):
        return validate(config, LMAuditConfig if is_reasoning(config) else AuditConfig)
    path = Path(config)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    return load_yaml(path, LMAuditConfig if is_reasoning(raw) else AuditConfig)


def load_data(data: ShapesAuditData | TensorAuditData | ImageFolderAuditData) -> dict[str, AuditData]:
    """The splits the config names, as AuditData, the primary split first."""
    if isinstance(data, ShapesAuditData):
        from kdlens.tasks.shapes import SHAPES, make_split, other_cues, with_cues

        out = {}
        for split in data.splits:
            drawn = make_split(data.shapes, split, data.n)
            edited_to = other_cues(drawn, seed=data.counterfactual_seed)
            out[split] = AuditData(drawn.images, drawn.labels, drawn.masks, drawn.difficulty,
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
        keep = slice(0, data.n)
        out[split] = AuditData(*(None if t is None else t[keep] for t in (
            loaded.inputs, loaded.labels, loaded.masks, loaded.difficulty, loaded.counterfactuals,
            loaded.counterfactual_targets)), name=split, classes=loaded.classes)
    return out


def _lab_shapes(config: AuditConfig) -> AuditConfig:
    """Shapes data for a lab teacher is drawn as the lab drew it, unless the config says how."""
    source = config.teacher
    if not isinstance(config.data, ShapesAuditData) or source is None or source.lab is None \
            or "shapes" in config.data.model_fields_set:
        return config
    from kdlens.lab.vision import recipe

    shapes = recipe(source.lab_recipe).shapes
    return config.model_copy(update={"data": config.data.model_copy(update={"shapes": shapes})})


def _check_sources(sources: dict[str, ModelSource]) -> None:
    """Files named by non-lab sources exist, and lab model names are real: before anything is built."""
    from kdlens.lab.vision import check_lab_model

    for name, source in sources.items():
        where = f"model {name!r}"
        if source.checkpoint is not None and not Path(source.checkpoint).is_dir():
            raise FileNotFoundError(f"Expected the checkpoint of {where} to be a folder with model.safetensors and "
                                    f"config.json, but got {source.checkpoint} (no such folder).")
        if source.weights is not None and not Path(source.weights).is_file():
            raise FileNotFoundError(f"Expected the weights of {where} to be a safetensors file, but got "
                                    f"{source.weights} (no such file).")
        if source.lab is not None:
            check_lab_model(source.lab_model)


def _build(sources: dict[str, ModelSource], device: str, progress: bool) -> dict[str, nn.Module]:
    from kdlens.lab.vision import lab_models

    built = {name: source.build().to(device) for name, source in sources.items() if source.lab is None}
    wanted = {name: (s.lab_root, s.lab_recipe, s.lab_model) for name, s in sources.items() if s.lab is not None}
    if wanted:
        built.update(lab_models(wanted, device=device, progress=progress))
    return {name: built[name] for name in sources}


def _models(config: AuditConfig, teacher, students, baselines, progress: bool) -> tuple:
    if teacher is None and config.teacher is None:
        raise ValueError("Expected a teacher, but got none. Give `teacher:` in the config or teacher=... to run().")
    students = dict(students) if students is not None else None
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
    _check_sources(sources)
    torch.manual_seed(config.seed)  # a fresh architecture's initial weights come from the run's seed
    built = _build(sources, config.device, progress)
    teacher = teacher if teacher is not None else built[TEACHER]
    students = students if students is not None else {n: built[n] for n in config.students}
    baselines = dict(baselines) if baselines is not None else {n: built[n] for n in config.baselines}
    for name in students:
        if name == TEACHER or name in baselines:
            raise ValueError(f"Expected distinct model names, but {name!r} names a student and the teacher or a "
                             f"baseline. Rename it.")
    return teacher, students, baselines


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


def _check_data(splits: dict[str, AuditData], models: dict[str, nn.Module]) -> None:
    for split, data in splits.items():
        if len(data.inputs) == 0:
            raise ValueError(f"Expected split {split!r} to hold examples, but got 0. Check its path or `n`.")
    probe = next(iter(splits.values())).inputs[:64]
    _check_models(models[TEACHER], {k: v for k, v in models.items() if k != TEACHER}, probe)
    classes = Classifier(models[TEACHER]).logits(probe[:2]).shape[-1]
    for split, data in splits.items():
        if int(data.labels.max()) >= classes or int(data.labels.min()) < 0:
            raise ValueError(f"Expected the labels of split {split!r} to lie in [0, {classes - 1}] (the models "
                             f"have {classes} classes), but got labels from {int(data.labels.min())} to "
                             f"{int(data.labels.max())}.")
    for name, model in models.items():
        _check_logits(Classifier(model, name).logits(probe), name, next(iter(splits)))


def _subset(data: AuditData, n: int | None) -> AuditData:
    if n is None or n >= len(data.inputs):
        return data
    keep = slice(0, n)
    return AuditData(*(None if t is None else t[keep] for t in (
        data.inputs, data.labels, data.masks, data.difficulty, data.counterfactuals, data.counterfactual_targets)),
        name=data.name, classes=data.classes)


def _difficulty_breakdown(run_dir: Path, data: AuditData, models: list[str], bins: int = 4) -> dict | None:
    """Accuracy per equal-count difficulty bin of the primary split, per model (from the outputs table)."""
    if data.difficulty is None:
        return None
    rows = read_rows(run_dir, "outputs")
    correct = {(r["model"], r["index"]): r["correct"] for r in rows if r["split"] == data.name}
    order = torch.argsort(data.difficulty.double(), stable=True)
    parts = [p for p in order.tensor_split(bins) if len(p)]
    out = {"bins": [{"low": float(data.difficulty[p].min()), "high": float(data.difficulty[p].max()), "n": len(p)}
                    for p in parts], "accuracy": {}}
    for name in models:
        out["accuracy"][name] = [sum(correct[(name, i)] for i in p.tolist()) / len(p) for p in parts]
    return out


def run(config: AuditConfig | LMAuditConfig | dict | str | Path, teacher: nn.Module | None = None,
        students: dict[str, nn.Module] | None = None, baselines: dict[str, nn.Module] | None = None,
        progress: bool = True) -> dict:
    """Audit a teacher against its students as ``config`` describes; returns what ``results.json`` holds.

    Parameters
    ----------
    config : AuditConfig, a dict of its fields, or the path of a YAML file; with ``data: {task: reasoning}``, an
        LMAuditConfig: language models that reason in steps (:mod:`kdlens.audit.lm`)
    teacher, students, baselines : modules that take the place of the config's sources (for Python callers); for
        language models, :class:`~kdlens.subjects.LanguageModel` objects (no baselines)
    progress : show the lab's training bars and one line per stage

    Returns
    -------
    dict: the results (``<run_dir>/results.json``; layout in ``docs/results.md``).
    """
    config = as_config(config)
    if isinstance(config, LMAuditConfig):
        from kdlens.audit import lm

        if baselines:
            raise ValueError("Expected no baselines in a language-model audit (not supported yet), but got "
                             f"{sorted(baselines)}. Pass them as students to see them beside the others.")
        return lm.run(config, teacher, students, progress)
    config = _lab_shapes(config)
    run_dir = Path(config.run_dir)
    splits = load_data(config.data)
    teacher, students, baselines = _models(config, teacher, students, baselines, progress)
    models = {TEACHER: teacher, **students, **baselines}
    for model in models.values():
        model.eval()
    _check_data(splits, models)
    primary_name = next(iter(splits))
    primary = splits[primary_name]
    layers = _layers(config, models, primary.inputs[:2])
    run_dir.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(run_dir / "config.yaml", dump_yaml(config))
    probes = config.probes
    stage_fns = {
        "outputs": functools.partial(outputs_stage, run_dir, teacher, {**students, **baselines}, splits,
                                     n_bins=probes.outputs.n_bins, batch_size=config.batch_size),
        "representations": functools.partial(
            representations_stage, run_dir, teacher, {**students, **baselines},
            _subset(primary, probes.representations.n), layers[TEACHER]["representations"],
            {n: layers[n]["representations"] for n in [*students, *baselines]},
            batch_size=config.batch_size) if probes.representations.enabled else None,
        "attribution": functools.partial(
            _attribution, run_dir, teacher, students, baselines, _subset(primary, probes.attribution.n),
            {n: layers[n]["attribution"] for n in models}, probes.attribution, config)
        if probes.attribution.enabled else None,
        "robustness": functools.partial(
            robustness_stage, run_dir, teacher, students, _subset(primary, probes.robustness.n),
            epsilon=probes.robustness.epsilon, steps=probes.robustness.steps, seed=config.seed,
            epsilons=probes.robustness.epsilons) if probes.robustness.enabled else None,
    }
    forget_disabled(run_dir, [name for name, fn in stage_fns.items() if fn is None])
    with stage_display(progress, list(STAGES)) as display:
        for name, fn in stage_fns.items():
            with display.stage(name) as status:
                if fn is None:
                    status["text"] = "off"
                    continue
                status["text"] = cached_or_seconds(run_dir, name, fn)
        with display.stage("gallery") as status:
            hashes = {name: record.get("inputs") for name, record in
                      io.read_json(run_dir / MANIFEST)["stages"].items() if name != "gallery"}
            status["text"] = cached_or_seconds(run_dir, "gallery", functools.partial(
                gallery_stage, run_dir, primary, list(students), primary_name, hashes))
    shifted = config.data.shifted_split
    data_summary = {"primary": primary_name, "shifted": shifted, "splits": {k: len(v.labels) for k, v in
                                                                            splits.items()},
                    "has_masks": primary.masks is not None, "has_counterfactuals": primary.counterfactuals is not None,
                    "task": config.data.task, "classes": primary.classes}
    extra = {"layers": layers,
             "models": {name: {"parameters": sum(p.numel() for p in model.parameters()),
                               "role": "teacher" if name == TEACHER else "student" if name in students
                               else "baseline"} for name, model in models.items()},
             "breakdowns": {"difficulty": _difficulty_breakdown(run_dir, primary, [TEACHER, *students])},
             "probes": probes.model_dump(mode="json")}
    return build_results(run_dir, list(students), list(baselines), data_summary, config.selection, extra)


def _attribution(run_dir, teacher, students, baselines, data, layers, probe, config) -> dict:
    thresholds = None
    if "teacher_reseeded" not in baselines and probe.agreement_threshold is not None:
        thresholds = {"agreement_threshold": probe.agreement_threshold}
        if probe.evidence_threshold is not None:
            thresholds["evidence_threshold"] = probe.evidence_threshold
    return attribution_stage(run_dir, teacher, students, data, layers, baselines, top_k=probe.top_k,
                             quantile=probe.quantile, seed=config.seed, batch_size=config.batch_size,
                             thresholds=thresholds)
