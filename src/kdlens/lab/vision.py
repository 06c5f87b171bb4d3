"""The vision lab: a teacher that uses the right reason, and students distilled from it in every common way.

The teacher learns shapes on ``train``, where the corner cue is independent of the label, so the cue cannot help
it. Students learn on ``transfer``, where the cue agrees with the label 95% of the time: a student that copies the
teacher's *answers* there can still pick up the cue. ``test_shifted`` (cue pointing to a wrong class) tells which did.

Everything lands in the run directory ``<root>/vision-<hash>/``, the hash taken over the recipe, so changing any
setting builds a new lab and calling again with the same recipe loads what is there. Each model is a stage
(``stages/<model>/`` while it trains, ``models/<model>/`` when done) recorded in ``manifest.json`` with the hash of its
inputs (its strategy and architecture); a stage whose inputs changed (a newer kdlens recipe) is trained again, and a
killed build resumes at the unfinished stage, inside it at its last checkpoint. No stage is sharded: training is one
optimiser trajectory (it resumes from checkpoints instead).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field, field_validator

from kdlens import io
from kdlens.config import StrictModel, did_you_mean, dump_yaml, named_recipe, validate
from kdlens.distill.config import StrategyConfig, TrainConfig
from kdlens.distill.loop import RUN_SETTINGS
from kdlens.distill.trainer import evaluate, train
from kdlens.lab.cnn import SmallCNN
from kdlens.rundir import RunDir, StageDir, StageOutput
from kdlens.stages import Stage, StageRunner
from kdlens.subjects import Classifier, load_classifier
from kdlens.subjects.devices import check_device
from kdlens.tasks.shapes import ShapesConfig, make_split
from kdlens.validation import fail


def student_strategies() -> dict[str, dict]:
    """The seven ways the lab trains a student (strategy configs as dicts, on SmallCNN's layer names).

    Output matching is Hinton KD at T = 4 with a 0.1 cross-entropy term; each other strategy adds one kind of
    alignment on top. Attention transfer weighs its pairs as the paper's beta = 1000 does in its own convention
    (squared distance averaged over the H * W positions, times beta / 2): beta / (2 H W) = 2 for block2's 16 x 16 maps
    and 8 for block3's 8 x 8, since our loss sums over positions.
    """
    kd = {"loss": "kd", "weight": 0.9, "temperature": 4.0}
    ce = {"loss": "hard_label", "weight": 0.1}
    blocks = [{"teacher": "block2", "student": "block2"}, {"teacher": "block3", "student": "block3"}]
    attention_pairs = [{**blocks[0], "weight": 2.0}, {**blocks[1], "weight": 8.0}]
    embed = [{"teacher": "embed", "student": "embed"}]
    return {
        "labels_only": {"terms": [{"loss": "hard_label"}]},
        "output_kd": {"terms": [kd, ce]},
        "feature_kd": {"terms": [kd, ce, {"loss": "fitnet", "weight": 1.0, "pairs": blocks}]},
        "relation_kd": {"terms": [kd, ce, {"loss": "rkd_distance", "weight": 1.0, "pairs": embed},
                                  {"loss": "rkd_angle", "weight": 2.0, "pairs": embed}]},
        "attention_kd": {"terms": [kd, ce, {"loss": "attention", "weight": 1.0, "pairs": attention_pairs}]},
        "attribution_kd": {"terms": [kd, ce, {"loss": "attribution", "weight": 1.0, "method": "gradcam",
                                              "pairs": blocks[1:]}]},
        "multi_objective": {"terms": [kd, ce, {"loss": "fitnet", "weight": 0.5, "pairs": blocks},
                                      {"loss": "cka", "weight": 0.5, "pairs": embed},
                                      {"loss": "calibration", "weight": 0.5, "kind": "mdca"}]},
    }


STUDENTS = tuple(student_strategies())
TEACHER_STRATEGY = {"name": "teacher", "terms": [{"loss": "hard_label"}]}


class CNNSpec(StrictModel):
    """A :class:`~kdlens.lab.cnn.SmallCNN`'s size: channels of its three blocks and convolutions per block."""

    widths: tuple[int, int, int]
    convs_per_block: int = Field(2, ge=1)


class VisionLabConfig(StrictModel):
    """The recipe; its hash (``students`` left out) names the lab's folder.

    The default student has a quarter of the teacher's weights (about 18k against 72k): the same depth, half the
    width, so it can learn the shapes, and the cue is a real temptation rather than its only option.
    """

    shapes: ShapesConfig = Field(default_factory=ShapesConfig)
    n_train: int = Field(12_000, ge=100)
    n_transfer: int = Field(8_000, ge=100)
    n_eval: int = Field(2_000, ge=100)
    teacher_model: CNNSpec = CNNSpec(widths=(16, 32, 64), convs_per_block=2)
    student_model: CNNSpec = CNNSpec(widths=(8, 16, 32), convs_per_block=2)
    teacher_train: TrainConfig = TrainConfig(epochs=4, batch_size=128, lr=3e-3, eval_every=4)
    student_train: TrainConfig = TrainConfig(epochs=5, batch_size=128, lr=3e-3, eval_every=5)
    students: list[str] = Field(default_factory=lambda: list(STUDENTS))
    seed: int = 0

    @field_validator("students")
    @classmethod
    def _known_students(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in STUDENTS:
                raise ValueError(f"unknown student {name!r}.{did_you_mean(name, STUDENTS)} "
                                 f"Students: {', '.join(STUDENTS)}.")
        return names


@dataclass
class VisionLab:
    """A built lab: where each model lives and what it scored."""

    root: Path
    config: VisionLabConfig
    teacher_dir: Path
    student_dirs: dict[str, Path]
    metrics: dict[str, dict]
    baseline_teacher_dir: Path | None = None

    def teacher(self):
        return load_classifier(self.teacher_dir)

    def baseline_teacher(self):
        """The teacher's recipe trained from another seed (``build(..., baseline_teacher=True)``)."""
        if self.baseline_teacher_dir is None:
            raise ValueError("Expected a lab built with baseline_teacher=True, but got one without it. "
                             "Call vision.build(root, config, baseline_teacher=True): the other models load from "
                             "cache.")
        return load_classifier(self.baseline_teacher_dir)

    def untrained_student(self, seed: int = 1):
        """A student of the lab's architecture with its initial weights (seeded): the floor of every comparison."""
        torch.manual_seed(seed)
        return SmallCNN(n_classes=self.config.shapes.n_classes, **self.config.student_model.model_dump())

    def student(self, name: str):
        return load_classifier(self.student_dirs[name])


def recipe_hash(config: VisionLabConfig) -> str:
    """Names the lab's folder: every setting but the list of students (each student is its own stage inside) and
    the training settings that change how fast a model trains but not the model."""
    exclude = {"students": True, "teacher_train": RUN_SETTINGS, "student_train": RUN_SETTINGS}
    return io.stable_hash(config.model_dump(mode="json", exclude=exclude))


def build(root: str | Path = "runs/lab", config: VisionLabConfig | None = None, progress: bool = True,
          device: str = "cpu", baseline_teacher: bool = False) -> VisionLab:
    """Build (or load) the vision lab under ``root``: the teacher, then each student in ``config.students``.

    Each model is a stage: trained once, recorded in ``manifest.json`` with its metrics and seconds, loaded after.
    A stage killed half-way resumes from its last checkpoint. ``device`` and ``progress`` change how a stage runs,
    not what it computes, so they are not part of the recipe's hash. ``baseline_teacher`` also trains the teacher
    again from seed + 1 (``teacher_reseeded``): the ceiling against which a student's agreement with the teacher's
    reasons is read (two equally accurate teachers do not attribute identically).

    Returns
    -------
    VisionLab: the folders of the teacher and students (safetensors + config.json) and each one's metrics:
    accuracy on ``test`` and ``test_shifted``, agreement with the teacher on both (students), seconds to train.
    """
    config = config or VisionLabConfig()
    check_device(device)
    run = RunDir(Path(root) / f"vision-{recipe_hash(config)}")
    run.claim()  # an older layout, or a folder kdlens did not make, is refused before anything is written
    run.write_config(dump_yaml(config))
    shapes = config.shapes
    data = functools.cache(lambda split, n: make_split(shapes, split, n))  # drawn only if a stage runs
    run_config = {"progress": progress, "seed": config.seed, "device": device}

    def evals() -> dict:
        return {split: data(split, config.n_eval) for split in ("test", "test_shifted")}

    teacher_kwargs = {"n_classes": shapes.n_classes, **config.teacher_model.model_dump(mode="json")}
    student_kwargs = {"n_classes": shapes.n_classes, **config.student_model.model_dump(mode="json")}

    def train_teacher(name: str, seed: int, stage_dir: StageDir) -> StageOutput:
        torch.manual_seed(seed)
        labels_only = validate(TEACHER_STRATEGY, StrategyConfig)
        result = train(SmallCNN(**teacher_kwargs), data("train", config.n_train), stage_dir.path, labels_only,
                       config.teacher_train.model_copy(update={**run_config, "seed": seed}), eval_data=evals(),
                       student_kwargs=teacher_kwargs)
        run.publish_model(name, result.model_dir)
        return StageOutput(summary=result.final)

    teacher_inputs = {"strategy": TEACHER_STRATEGY, "model": teacher_kwargs}
    stages = [Stage("teacher", teacher_inputs, compute=functools.partial(train_teacher, "teacher", config.seed))]
    if baseline_teacher:  # the same recipe from another seed: how far two equally good teachers' reasons differ
        stages.append(Stage("teacher-reseeded", {**teacher_inputs, "seed": config.seed + 1},
                            compute=functools.partial(train_teacher, "teacher-reseeded", config.seed + 1)))
    strategies = student_strategies()

    def train_student(name: str, stage_dir: StageDir) -> StageOutput:
        teacher = load_classifier(run.model_dir("teacher"), device=device)
        torch.manual_seed(config.seed)
        student = SmallCNN(**student_kwargs)
        strategy = validate({"name": name, **strategies[name]}, StrategyConfig)
        result = train(student, data("transfer", config.n_transfer), stage_dir.path, strategy,
                       config.student_train.model_copy(update=run_config),
                       teacher=teacher if strategy.needs_teacher else None, eval_data=evals(),
                       student_kwargs=student_kwargs)
        run.publish_model(f"student-{name}", result.model_dir)
        if strategy.needs_teacher:
            return StageOutput(summary=result.final)
        # agreement with the teacher for every student, the labels-only one included
        return StageOutput(summary={**result.final, **evaluate(Classifier(student), Classifier(teacher), evals())})

    for name in config.students:
        inputs = {"strategy": strategies[name], "model": student_kwargs}
        stages.append(Stage(f"student-{name}", inputs, compute=functools.partial(train_student, name)))
    metrics = {}
    with io.exclusive(run.path.with_name(f".{run.path.name}.lock")), StageRunner(run, progress=False) as runner:
        for stage in stages:  # one builder at a time: the others wait, then load
            key = stage.name.removeprefix("student-").replace("teacher-reseeded", "teacher_reseeded")
            metrics[key] = runner.run(stage)
    student_dirs = {name: run.model_dir(f"student-{name}") for name in config.students}
    baseline_dir = run.model_dir("teacher-reseeded") if baseline_teacher else None
    return VisionLab(run.path, config, run.model_dir("teacher"), student_dirs, metrics, baseline_dir)


def quick_config(seed: int = 0) -> VisionLabConfig:
    """The same recipe on half the teacher's data and 40% of the students': about a minute on 2 cores, and the
    teacher still learns the shapes (for a first look; the figures in the docs come from the full lab)."""
    return VisionLabConfig(n_train=6_000, n_transfer=3_000, n_eval=1_000, seed=seed,
                           student_train=TrainConfig(epochs=4, batch_size=128, lr=3e-3, eval_every=4))


RECIPES = {"default": VisionLabConfig, "quick": quick_config}
BASELINES = ("teacher", "teacher_reseeded", "untrained_student")


def recipe(name: str) -> VisionLabConfig:
    """A lab recipe by name (``default``, ``quick``) or from a VisionLabConfig YAML file."""
    return named_recipe(name, RECIPES, VisionLabConfig)


def check_lab_model(name: str) -> None:
    """Raise (before any training) if ``name`` is not a model the lab builds."""
    known = (*BASELINES, *STUDENTS)
    if name not in known:
        fail("lab_model", f"one of {', '.join(known)}", repr(name), did_you_mean(name, known).strip())


# The demo's students: the shortcut (labels only), plain output KD, the most accurate (FitNets hints) and the one
# that copies the teacher's evidence (attribution KD); the other three are in examples/audit_lab.yaml.
DEMO_STUDENTS = ("labels_only", "output_kd", "feature_kd", "attribution_kd")
