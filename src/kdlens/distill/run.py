"""A distillation described by one YAML file: data, teacher, student, strategy, training loop.

``kdlens distill CONFIG`` validates the file into :class:`DistillRunConfig`, saves the resolved config in the run
directory, and calls :func:`kdlens.distill.trainer.train`. Running it again resumes the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from kdlens import io
from kdlens.config import StrictModel, dump_yaml, validate, with_default_task
from kdlens.distill.config import STRATEGIES, StrategyConfig, TrainConfig
from kdlens.distill.trainer import TrainResult, train
from kdlens.rundir import RunDir
from kdlens.subjects.devices import check_device
from kdlens.subjects.sources import ModelSource, load_models
from kdlens.tasks.shapes import ShapesConfig, ShapesSplit, make_split
from kdlens.validation import fail


class ShapesData(StrictModel):
    """Lab data: the shapes task; ``split`` trains the student, ``eval`` maps split names to sizes."""

    task: Literal["shapes"] = "shapes"
    shapes: ShapesConfig = Field(default_factory=ShapesConfig)
    split: Literal["train", "transfer", "test", "test_shifted"] = "transfer"
    n: int = Field(8_000, ge=1)
    eval: dict[Literal["train", "transfer", "test", "test_shifted"], int] = Field(
        default_factory=lambda: {"test": 2_000, "test_shifted": 2_000})

    def load(self) -> tuple[ShapesSplit, dict[str, ShapesSplit]]:
        evals = {split: make_split(self.shapes, split, n) for split, n in self.eval.items()}
        return make_split(self.shapes, self.split, self.n), evals


class TensorData(StrictModel):
    """Your own data: safetensors files, each holding ``inputs`` (n, ...) float and ``labels`` (n,) integer tensors.

    ``train`` trains the student; ``eval`` maps split names to files evaluated at each epoch end. Written by e.g.
    ``safetensors.torch.save_file({"inputs": x, "labels": y}, "train.safetensors")``.
    """

    task: Literal["tensors"]
    train: str
    eval: dict[str, str] = Field(default_factory=dict)

    def load(self) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        return _read_pair(self.train), {split: _read_pair(path) for split, path in self.eval.items()}


def _read_pair(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not Path(path).is_file():
        fail("data file", "a safetensors file", f"{path} (no such file)", error=FileNotFoundError)
    tensors = io.load_tensors(path)
    if "inputs" not in tensors or "labels" not in tensors:
        fail(f"{path}", "a safetensors file with `inputs` and `labels` tensors", f"keys {sorted(tensors)}",
             'Save it as save_file({"inputs": x, "labels": y}, path).')
    inputs, labels = tensors["inputs"], tensors["labels"]
    if labels.is_floating_point() or labels.ndim != 1 or len(labels) != len(inputs):
        fail(f"{path}: labels", f"integer class indices of shape ({len(inputs)},), one per input",
             f"{labels.dtype} of shape {tuple(labels.shape)}")
    return inputs.float() if not inputs.is_floating_point() else inputs, labels.long()


class DistillRunConfig(StrictModel):
    run_dir: str
    data: Annotated[ShapesData | TensorData, Field(discriminator="task")] = Field(default_factory=ShapesData)
    teacher: ModelSource | None = None
    student: ModelSource
    strategy: str | StrategyConfig = "output_kd"
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="before")
    @classmethod
    def _shapes_by_default(cls, data):
        return with_default_task(data, "shapes")

    @model_validator(mode="after")
    def _lab_teacher_needs_lab_data(self):
        if self.teacher is not None and self.teacher.lab == "vision" and self.data.task != "shapes":
            raise ValueError("teacher: {lab: vision} is trained on the shapes task; use data: {task: shapes}, "
                             "or give the teacher as a checkpoint")
        return self

    @model_validator(mode="after")
    def _known_preset(self):
        if isinstance(self.strategy, str) and self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy preset {self.strategy!r}; presets: {', '.join(STRATEGIES)} "
                             "(or write {name: ..., terms: [...]})")
        return self

    def strategy_config(self) -> StrategyConfig:
        if isinstance(self.strategy, str):
            return validate(STRATEGIES[self.strategy], StrategyConfig)
        return self.strategy


def run(config: DistillRunConfig, teacher: nn.Module | None = None, progress: bool = True) -> TrainResult:
    """Run (or resume) the distillation ``config`` describes; ``teacher`` overrides ``config.teacher`` (a lab
    teacher is built by its resolver, on the shapes the data draws)."""
    check_device(config.train.device)
    run_dir = Path(config.run_dir)
    strategy = config.strategy_config()
    # the resolved config: every default filled in, a preset strategy written out term by term
    RunDir(run_dir).write_config(dump_yaml(config.model_copy(update={"strategy": strategy})))
    if teacher is None and config.teacher is not None:
        overrides = {"shapes": config.data.shapes} if config.data.task == "shapes" else None
        teacher = load_models({"teacher": config.teacher}, "classifier", config.train.device, progress,
                              overrides)["teacher"]
    torch.manual_seed(config.train.seed)  # the student's initial weights come from the run's seed too
    student = config.student.build()
    data, evals = config.data.load()
    return train(student, data, run_dir, strategy, config.train, teacher=teacher if strategy.needs_teacher else None,
                 eval_data=evals, student_kwargs=config.student.kwargs)
