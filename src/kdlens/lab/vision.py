"""The vision lab: a teacher that uses the right reason, and students distilled from it in every common way.

The teacher learns shapes on ``train``, where the corner cue is independent of the label, so the cue cannot help
it. Students learn on ``transfer``, where the cue agrees with the label 95% of the time: a student that copies the
teacher's *answers* there can still pick up the cue. ``test_shifted`` (cue pointing to a wrong class) tells which did.

Everything lands in ``<root>/vision-<hash>/``, the hash taken over the recipe, so changing any setting builds a new
lab and calling again with the same recipe loads what is there. Each model is a stage recorded in
``manifest.json``; a killed build resumes at the unfinished stage (and inside it, at its last checkpoint).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field

from kdlens import io
from kdlens.config import StrictModel, dump_yaml, validate
from kdlens.distill.config import StrategyConfig, TrainConfig
from kdlens.distill.trainer import evaluate, train
from kdlens.lab.cnn import SmallCNN
from kdlens.subjects import Classifier, load_classifier
from kdlens.tasks.shapes import ShapesConfig, make_split

TEACHER_WIDTHS, STUDENT_WIDTHS = (16, 32, 64), (8, 16, 32)


def student_strategies(feature_pairs: list[dict], embed_pair: list[dict], cam_pair: list[dict]) -> dict[str, dict]:
    """The seven ways the lab trains a student (strategy configs as dicts)."""
    kd = {"loss": "kd", "weight": 0.9, "temperature": 4.0}
    ce = {"loss": "hard_label", "weight": 0.1}
    return {
        "labels_only": {"terms": [{"loss": "hard_label"}]},
        "output_kd": {"terms": [kd, ce]},
        "feature_kd": {"terms": [kd, ce, {"loss": "fitnet", "weight": 1.0, "pairs": feature_pairs}]},
        "relation_kd": {"terms": [kd, ce, {"loss": "rkd_distance", "weight": 1.0, "pairs": embed_pair},
                                  {"loss": "rkd_angle", "weight": 2.0, "pairs": embed_pair}]},
        "attention_kd": {"terms": [kd, ce, {"loss": "attention", "weight": 100.0, "pairs": feature_pairs}]},
        "attribution_kd": {"terms": [kd, ce, {"loss": "attribution", "weight": 1.0, "method": "gradcam",
                                              "pairs": cam_pair}]},
        "multi_objective": {"terms": [kd, ce, {"loss": "fitnet", "weight": 0.5, "pairs": feature_pairs},
                                      {"loss": "cka", "weight": 0.5, "pairs": embed_pair},
                                      {"loss": "calibration", "weight": 0.5, "kind": "mdca"}]},
    }


class VisionLabConfig(StrictModel):
    """The recipe; its hash names the lab's folder."""

    shapes: ShapesConfig = Field(default_factory=ShapesConfig)
    n_train: int = Field(12_000, ge=100)
    n_transfer: int = Field(8_000, ge=100)
    n_eval: int = Field(2_000, ge=100)
    teacher_train: TrainConfig = TrainConfig(epochs=5, batch_size=128, lr=3e-3)
    student_train: TrainConfig = TrainConfig(epochs=4, batch_size=128, lr=3e-3)
    students: list[str] = Field(default_factory=lambda: list(student_strategies([], [], [])))
    seed: int = 0


@dataclass
class VisionLab:
    """A built lab: where each model lives and what it scored."""

    root: Path
    config: VisionLabConfig
    teacher_dir: Path
    student_dirs: dict[str, Path]
    metrics: dict[str, dict]

    def teacher(self):
        return load_classifier(self.teacher_dir)

    def student(self, name: str):
        return load_classifier(self.student_dirs[name])


def _manifest(root: Path) -> dict:
    path = root / "manifest.json"
    return io.read_json(path) if path.is_file() else {"stages": {}}


def build(root: str | Path = "runs/lab", config: VisionLabConfig | None = None, progress: bool = True) -> VisionLab:
    """Build (or load) the vision lab under ``root``; returns the models' folders and their metrics."""
    config = config or VisionLabConfig()
    root = Path(root) / f"vision-{io.stable_hash(config.model_dump(mode='json'))}"
    root.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(root / "config.yaml", dump_yaml(config))
    shapes, n_classes = config.shapes, config.shapes.n_classes
    train_split = make_split(shapes, "train", config.n_train)
    transfer = make_split(shapes, "transfer", config.n_transfer)
    evals = {split: make_split(shapes, split, config.n_eval) for split in ("test", "test_shifted")}
    manifest = _manifest(root)

    def stage(name: str, run) -> dict:
        if name in manifest["stages"]:
            return manifest["stages"][name]
        started = time.perf_counter()
        metrics = run()
        manifest["stages"][name] = {**metrics, "seconds": round(time.perf_counter() - started, 2)}
        io.atomic_write_json(root / "manifest.json", manifest)
        return manifest["stages"][name]

    teacher_kwargs = {"n_classes": n_classes, "widths": list(TEACHER_WIDTHS), "convs_per_block": 2}
    student_kwargs = {"n_classes": n_classes, "widths": list(STUDENT_WIDTHS), "convs_per_block": 1}

    def train_teacher() -> dict:
        torch.manual_seed(config.seed)
        teacher = SmallCNN(**teacher_kwargs)
        labels_only = validate({"name": "teacher", "terms": [{"loss": "hard_label"}]}, StrategyConfig)
        result = train(teacher, train_split, root / "teacher", labels_only,
                       config.teacher_train.model_copy(update={"progress": progress, "seed": config.seed}),
                       eval_data=evals, student_kwargs=teacher_kwargs)
        return result.final

    metrics = {"teacher": stage("teacher", train_teacher)}
    teacher = load_classifier(root / "teacher" / "model")
    pairs = [{"teacher": f"block{i}", "student": f"block{i}"} for i in (2, 3)]
    strategies = student_strategies(pairs, [{"teacher": "embed", "student": "embed"}],
                                    [{"teacher": "block3", "student": "block3"}])
    for name in config.students:
        if name not in strategies:
            raise ValueError(f"Expected `students` to be names from {sorted(strategies)}, but got {name!r}.")

        def train_student(name=name) -> dict:
            torch.manual_seed(config.seed)
            student = SmallCNN(**student_kwargs)
            strategy = validate({"name": name, **strategies[name]}, StrategyConfig)
            result = train(student, transfer, root / f"student-{name}", strategy,
                           config.student_train.model_copy(update={"progress": progress, "seed": config.seed}),
                           teacher=teacher if strategy.needs_teacher else None, eval_data=evals,
                           student_kwargs=student_kwargs)
            # agreement with the teacher for every student, the labels-only one included
            return {**result.final, **evaluate(Classifier(student), Classifier(teacher), evals)}

        metrics[name] = stage(f"student-{name}", train_student)
    student_dirs = {name: root / f"student-{name}" / "model" for name in config.students}
    return VisionLab(root, config, root / "teacher" / "model", student_dirs, metrics)


def quick_config(seed: int = 0) -> VisionLabConfig:
    """A lab small enough for tests and a first look (seconds, not minutes); same recipe, less data."""
    small = TrainConfig(epochs=2, batch_size=64, lr=3e-3)
    return VisionLabConfig(n_train=2_000, n_transfer=1_000, n_eval=400, teacher_train=small,
                           student_train=TrainConfig(epochs=1, batch_size=64, lr=3e-3), seed=seed)
