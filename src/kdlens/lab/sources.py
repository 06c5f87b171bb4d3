"""The lab's model sources: ``lab: vision`` and ``lab: lm`` in a config resolve here (registered through the
``kdlens.sources`` entry point, so the audit and distill never import the lab)."""

from __future__ import annotations

from kdlens.subjects.checkpoint import register_architecture
from kdlens.subjects.sources import ModelSource, Resolver
from kdlens.subjects.sources import register as register_resolver


def _by_lab(wanted: dict[str, ModelSource]) -> dict[tuple[str, str], dict[str, str]]:
    """(lab root, recipe) -> {your name: lab model}: each distinct lab is built once for all its models."""
    labs: dict[tuple[str, str], dict[str, str]] = {}
    for name, source in wanted.items():
        labs.setdefault((source.lab_root, source.lab_recipe), {})[name] = source.lab_model
    return dict(sorted(labs.items()))


def load_vision(wanted: dict[str, ModelSource], device: str = "cpu", progress: bool = True,
                overrides: dict | None = None) -> dict:
    """Build (or load) the vision labs ``wanted`` needs, with only the students asked for and the re-seeded
    teacher only when asked for; returns your name -> ``nn.Module`` on ``device``."""
    from kdlens.lab import vision

    out = {}
    for (root, recipe_name), models in _by_lab(wanted).items():
        config = vision.recipe(recipe_name).model_copy(update=overrides or {})
        config = config.model_copy(update={"students": [s for s in vision.STUDENTS if s in models.values()]})
        lab = vision.build(root, config, progress=progress, device=device,
                           baseline_teacher="teacher_reseeded" in models.values())
        for name, model in models.items():
            if model == "teacher":
                out[name] = lab.teacher()
            elif model == "teacher_reseeded":
                out[name] = lab.baseline_teacher()
            elif model == "untrained_student":
                out[name] = lab.untrained_student()
            else:
                out[name] = lab.student(model)
    return {name: out[name].to(device) for name in wanted}


def load_lm(wanted: dict[str, ModelSource], device: str = "cpu", progress: bool = True,
            overrides: dict | None = None) -> dict:
    """Build (or load) the language-model labs ``wanted`` needs, with only the students asked for; returns your
    name -> :class:`~kdlens.subjects.LanguageModel` on ``device``."""
    from kdlens.lab import lm
    from kdlens.subjects.lm import LanguageModel

    out = {}
    for (root, recipe_name), models in _by_lab(wanted).items():
        config = lm.recipe(recipe_name).model_copy(update=overrides or {})
        config = config.model_copy(update={"students": [s for s in lm.STUDENTS if s in models.values()]})
        lab = lm.build(root, config, progress=progress, device=device)
        for name, model in models.items():
            out[name] = LanguageModel.from_pretrained(lab.model_dirs[model], device=device, name=name)
    return {name: out[name] for name in wanted}


def _vision_check(source: ModelSource) -> None:
    from kdlens.lab.vision import check_lab_model

    check_lab_model(source.lab_model)


def _lm_check(source: ModelSource) -> None:
    from kdlens.lab.lm import check_lab_model

    check_lab_model(source.lab_model)


def _vision_task(source: ModelSource) -> dict:
    from kdlens.lab.vision import recipe

    return {"shapes": recipe(source.lab_recipe).shapes}


def _lm_tasks(source: ModelSource) -> dict:
    from kdlens.lab.lm import recipe

    lab = recipe(source.lab_recipe)
    return {"chains": lab.chains, "babi": lab.babi}


def register() -> None:
    """Register ``lab: vision`` (classifiers) and ``lab: lm`` (language models), and the lab's classifier
    architecture as one a checkpoint may name without ``trust_remote_code``."""
    from kdlens.lab.cnn import SmallCNN

    register_architecture(SmallCNN)
    register_resolver("vision", Resolver("classifier", _vision_check, load_vision, _vision_task))
    register_resolver("lm", Resolver("lm", _lm_check, load_lm, _lm_tasks))
