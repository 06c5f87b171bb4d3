"""What ``kdlens audit CONFIG`` reads when the models are language models that reason in steps (``data: {task:
reasoning}``): the models (:class:`ModelSource`: local Hugging Face folders or the language-model lab), the
questions (the ``chains`` and ``babi`` tasks, whose every step a checker verifies), the probes' settings and the
selection rule.

Validated whole before any model is loaded; a typo names the key it was probably meant to be.
"""

from __future__ import annotations

import re
import string
from typing import Literal

from pydantic import Field, model_validator

from kdlens.audit.config import AuditSettings
from kdlens.config import StrictModel
from kdlens.tasks.babi import BabiConfig
from kdlens.tasks.chains import ChainsConfig


class ReasoningAuditData(StrictModel):
    """Questions of the lab's reasoning tasks: the first ``n`` of ``split`` for each task given (``null`` leaves a
    task out). Left unset with a lab teacher, each task is drawn as the lab drew it."""

    task: Literal["reasoning"] = "reasoning"
    chains: ChainsConfig | None = Field(default_factory=ChainsConfig)
    babi: BabiConfig | None = Field(default_factory=BabiConfig)
    split: Literal["train", "validation", "test"] = "test"
    n: int = Field(200, ge=1, le=100_000, description="questions per task")
    prompt_template: str = Field("{question}", description="what each model is given: {question} is the task's "
                                 "question, {examples} the few-shot block (write {{ and }} for literal braces)")
    few_shot: int = Field(0, ge=0, le=64, description="solved questions of the train split, each with the "
                          "teacher-style trace, that fill {examples} (same task as the question)")

    @model_validator(mode="after")
    def _some_task(self):
        if self.chains is None and self.babi is None:
            raise ValueError("give at least one task: chains or babi (both are null)")
        return self

    @model_validator(mode="after")
    def _template(self):
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(self.prompt_template) if name is not None}
        except ValueError as error:
            raise ValueError(f"prompt_template is not a format string ({error}); write {{{{ and }}}} for literal "
                             f"braces") from None
        unknown = fields - {"question", "examples"}
        if unknown:
            raise ValueError(f"prompt_template may use {{question}} and {{examples}} only, but got "
                             f"{', '.join(sorted('{' + f + '}' for f in unknown))}")
        if "question" not in fields:
            raise ValueError("prompt_template must contain {question}, where each question goes")
        if (self.few_shot > 0) != ("examples" in fields):
            raise ValueError(f"few_shot is {self.few_shot} but prompt_template "
                             f"{'has' if 'examples' in fields else 'has no'} {{examples}}: give both (solved "
                             f"examples before each question) or neither")
        return self


class TracesProbe(StrictModel):
    """Greedy traces of every model on every question, each checked step by step."""

    max_new_tokens: int = Field(160, ge=1, le=32_768)
    batch_size: int = Field(32, ge=1, le=4096)
    stop: str | None = Field(None, min_length=1, description="cut each trace before this string's first "
                             "appearance; default: a newline when data.few_shot > 0 (each solved example is one "
                             "line, and a model that follows them goes on to a next question), none otherwise")


class AnswerCalibrationProbe(StrictModel):
    """The probability a model gives to the answer it wrote, against whether the answer is right."""

    enabled: bool = True
    n_bins: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(16, ge=1, le=4096)


class LMRepresentationsProbe(StrictModel):
    """Linear CKA between teacher and student hidden states, averaged per word (tokenizers may differ), on each
    question followed by the teacher's trace."""

    enabled: bool = True
    n: int | None = Field(200, ge=2, le=100_000, description="the first n questions, tasks in order (all when fewer)")
    batch_size: int = Field(16, ge=1, le=4096)


class LMProbes(StrictModel):
    traces: TracesProbe = Field(default_factory=TracesProbe)
    calibration: AnswerCalibrationProbe = Field(default_factory=AnswerCalibrationProbe)
    representations: LMRepresentationsProbe = Field(default_factory=LMRepresentationsProbe)


class LMAuditConfig(AuditSettings):
    """One audit of a language-model teacher against its students on reasoning questions, written to ``run_dir``."""

    data: ReasoningAuditData = Field(default_factory=ReasoningAuditData)
    probes: LMProbes = Field(default_factory=LMProbes)
    samples: int = Field(3, ge=0, le=100, description="sample traces per kind and student in the report")

    @model_validator(mode="after")
    def _names(self):
        if "teacher" in self.students:
            raise ValueError("'teacher' names the teacher; give students other names")
        for name in self.students:
            check_model_name(name)
        return self


def check_model_name(name: str) -> None:
    """A model's name becomes a folder of the run directory: letters, digits, ``_``, ``.``, ``-`` only."""
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name) or name in (".", ".."):
        suggestion = re.sub(r"[^\w.-]+", "_", str(name))
        raise ValueError(f"Expected a model name of letters, digits, '_', '.' or '-' (it names a folder of the run "
                         f"directory), but got {name!r}. Rename it, e.g. {suggestion!r}.")
