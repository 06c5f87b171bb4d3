"""What ``kdlens crosscoder CONFIG`` reads: the two models (any language-model sources: local folders, GGUF files,
the lab, each optionally compressed), the texts both read (a local file), and the crosscoder's settings (those of
the audit's probe). Validated whole before any model loads; a typo names the key it was probably meant to be."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from kdlens.audit.config import check_run_dir
from kdlens.audit.lm.config import CrosscoderProbe, check_model_name
from kdlens.config import StrictModel
from kdlens.subjects.sources import ModelSource


class TextsSource(StrictModel):
    """Texts from local files: ``txt`` (one text per non-empty line), ``paragraphs`` (one text per block of lines
    between blank lines, its lines joined by spaces: markdown or prose) or ``.jsonl`` / ``.json`` / ``.csv`` /
    ``.parquet`` (read through Hugging Face ``datasets``; ``field`` is the column)."""

    path: str | list[str] = Field(description="a file, or several read one after another")
    format: Literal["txt", "paragraphs", "jsonl", "json", "csv", "parquet"] | None = Field(
        None, description="default: by suffix (.txt: txt, .md: paragraphs)")
    field: str = Field("text", min_length=1, description="the column holding each text")
    n: int | None = Field(None, ge=2, le=10_000_000, description="the first n texts (null: all)")


class CrosscoderSettings(CrosscoderProbe):
    """The audit probe's settings less those that need questions (steering) or an audit's students."""

    @model_validator(mode="after")
    def _no_audit_keys(self):
        if self.base is not None or self.students is not None:
            raise ValueError("base and students belong to the audit's probe; here the models are first: and second:")
        return self


class CrosscoderConfig(StrictModel):
    """One crosscoder of ``first`` (the base model) and ``second`` (the distilled one) on ``texts``, written to
    ``run_dir``."""

    run_dir: str = Field(description="the run directory: a new folder, or one kdlens made")
    first: ModelSource = Field(description="the base model (model 0: r near 0 is its alone)")
    second: ModelSource = Field(description="the distilled model (model 1: r near 1 is its alone)")
    names: tuple[str, str] = Field(("base", "distilled"), description="how the report names the two models")
    texts: TextsSource
    crosscoder: CrosscoderSettings = Field(default_factory=lambda: CrosscoderSettings(steering={"latents": 0}))
    device: str = "cpu"

    @field_validator("run_dir")
    @classmethod
    def _a_folder(cls, value: str) -> str:
        return check_run_dir(value)

    @field_validator("names")
    @classmethod
    def _names(cls, value: tuple[str, str]) -> tuple[str, str]:
        for name in value:
            check_model_name(name)
        if value[0] == value[1]:
            raise ValueError(f"the two models need two names, but both are {value[0]!r}")
        return value
