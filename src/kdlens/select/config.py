"""What ``kdlens select CONFIG`` reads: the teacher and the original student, the training problems (the lab's tasks
or your questions, as an LM audit reads them), how many responses to sample and how, and which selections to write.
Validated whole before any model loads; a typo names the key it was probably meant to be."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kdlens.audit.config import check_run_dir
from kdlens.audit.lm.config import LMAuditData, ReasoningAuditData, Segmentation
from kdlens.config import StrictModel
from kdlens.probes.provenance import BETA
from kdlens.select.choose import METHODS
from kdlens.subjects.sources import ModelSource


class SelectConfig(StrictModel):
    """One teacher-guided selection of distillation data, written to ``run_dir``."""

    run_dir: str = Field(description="the run directory: a new folder, or one kdlens made")
    teacher: ModelSource
    student: ModelSource = Field(description="the original student S, before distillation")
    data: LMAuditData = Field(default_factory=lambda: ReasoningAuditData(split="train"),
                              description="the training problems (default: the lab's train split)")
    k: int = Field(4, ge=1, le=256, description="teacher responses sampled per problem")
    temperature: float = Field(1.0, gt=0, le=10)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(160, ge=1, le=32_768)
    stop: str | None = Field(None, min_length=1, description="cut each response before this string")
    batch_size: int = Field(16, ge=1, le=4096)
    beta: float = Field(BETA, ge=0, le=1, description="teacher / student sentence: p_T - p_S above beta (or below "
                        "-beta); common otherwise")
    per: Literal["token", "character"] = "token"
    segmentation: Segmentation = Field(default_factory=Segmentation)
    methods: list[Literal[METHODS]] = Field(list(METHODS), min_length=1, description="the selections to write")
    device: str = "cpu"
    seed: int = Field(0, description="the sampling and the random baseline")

    @field_validator("run_dir")
    @classmethod
    def _a_folder(cls, value: str) -> str:
        return check_run_dir(value)

    @field_validator("methods")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        repeated = sorted({m for m in value if value.count(m) > 1})
        if repeated:
            raise ValueError(f"each method once, but {', '.join(repeated)} is given twice")
        return value
