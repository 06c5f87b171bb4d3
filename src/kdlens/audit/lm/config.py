"""What ``kdlens audit CONFIG`` reads when the models are language models: the models (:class:`ModelSource`: local
Hugging Face folders, GGUF files or the language-model lab), the questions (``data: {task: reasoning}``, the lab's
``chains`` and ``babi`` tasks, whose every step a checker verifies; or ``data: {task: questions}``, your own file),
the probes' settings and the selection rule.

Validated whole before any model is loaded; a typo names the key it was probably meant to be.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from kdlens.audit.config import AuditSettings
from kdlens.config import StrictModel, did_you_mean
from kdlens.probes.provenance import ALPHA, BETA
from kdlens.tasks.answers import COMPARISONS, EXTRACTORS, THINK
from kdlens.tasks.babi import BabiConfig
from kdlens.tasks.chains import ChainsConfig
from kdlens.tasks.text import TERMINATORS


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
        check_template(self.prompt_template, ("question", "examples"))
        fields = template_fields(self.prompt_template)
        if (self.few_shot > 0) != ("examples" in fields):
            raise ValueError(f"few_shot is {self.few_shot} but prompt_template "
                             f"{'has' if 'examples' in fields else 'has no'} {{examples}}: give both (solved "
                             f"examples before each question) or neither")
        return self


class AnswerSettings(StrictModel):
    """How a model's answer is read out of its text and judged against the gold answer.

    ``auto`` (the defaults) decides per question: a question with ``choices`` is read as a choice letter; a gold
    answer that is a number is compared as a number and its trace's equations are checked; any other answer is
    read from "the answer is ..." or the last sentence and is right when it holds the gold words (``contains``),
    with no step checker."""

    extract: Literal[EXTRACTORS] = Field("auto", description="auto: \\boxed{}, else 'the answer is', else the "
                                         "last number (a choice letter for multiple-choice questions)")
    pattern: str | None = Field(None, description="with extract: regex, the pattern (its first group is the answer)")
    compare: Literal[("auto", *COMPARISONS)] = "auto"
    tolerance: float = Field(1e-6, ge=0, description="numeric answers: largest absolute difference still equal")
    think: tuple[str, str] | None = Field(THINK, description="markers of a reasoning block; the answer is read "
                                          "after it, and a block never closed gives no answer (null: none)")
    steps: Literal["auto", "arithmetic", "none"] = Field("auto", description="the step checker: arithmetic "
                                                         "verifies equations; none leaves traces unchecked")

    @model_validator(mode="after")
    def _pattern(self):
        if self.extract == "regex":
            if self.pattern is None:
                raise ValueError("extract is regex but no pattern is given: add pattern, with a group around the "
                                 "answer, e.g. 'Result: (\\S+)'")
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression ({error})") from None
        elif self.pattern is not None:
            raise ValueError(f"pattern is given but extract is {self.extract!r}: set extract: regex to use it")
        if self.think is not None and not all(self.think):
            raise ValueError("think markers must be two non-empty strings, e.g. ['<think>', '</think>'], or null")
        return self


class QuestionsAuditData(StrictModel):
    """Your own questions from a local file (read through Hugging Face ``datasets``; nothing is downloaded).

    Each prompt is ``prompt_template`` with the question in; ``few_shot`` solved examples (from ``shots_path``, else
    the first ``few_shot`` rows of ``path``, which then are not asked) come before it: as text in ``{examples}``, or
    with ``chat: true`` as earlier turns of each model's own chat template."""

    task: Literal["questions"] = "questions"
    path: str = Field(description="a .jsonl, .csv or .parquet file of questions")
    format: Literal["jsonl", "json", "csv", "parquet"] | None = Field(None, description="default: by the suffix")
    fields: dict[str, str] = Field(default_factory=dict, description="our name (question, answer, trace, "
                                   "difficulty, category, choices) -> your column")
    n: int | None = Field(None, ge=1, le=100_000, description="at most n questions (all when fewer)")
    answer: AnswerSettings = Field(default_factory=AnswerSettings)
    prompt_template: str | None = Field(None, description="{question}, {choices} (the options, A. ... one per "
                                        "line) and, without chat, {examples}; default 'Question: {question}\\n"
                                        "Answer:' after {examples}, or '{question}' with chat")
    few_shot: int = Field(0, ge=0, le=64, description="solved examples before each question")
    shots_path: str | None = Field(None, description="a file of solved examples (same format and fields)")
    chat: bool = Field(False, description="apply each model's own chat template")
    system_prompt: str | None = Field(None, min_length=1, description="with chat: the system turn")

    @model_validator(mode="after")
    def _template(self):
        if self.system_prompt is not None and not self.chat:
            raise ValueError("system_prompt is given but chat is false: a system turn needs the chat template "
                             "(set chat: true)")
        if self.shots_path is not None and self.few_shot == 0:
            raise ValueError("shots_path is given but few_shot is 0: say how many solved examples to show")
        if self.prompt_template is None:
            return self
        check_template(self.prompt_template, ("question", "choices") + (() if self.chat else ("examples",)),
                       "; with chat: true the examples are earlier turns, not {examples}" if self.chat else "")
        if not self.chat and self.few_shot > 0 and "examples" not in template_fields(self.prompt_template):
            raise ValueError(f"few_shot is {self.few_shot} but prompt_template has no {{examples}}: put it where "
                             f"the solved examples go")
        return self

    @property
    def template(self) -> str:
        """The prompt template in force (the default depends on ``chat``)."""
        if self.prompt_template is not None:
            return self.prompt_template
        return "{question}" if self.chat else "{examples}Question: {question}\nAnswer:"


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def check_template(template: str, allowed: tuple[str, ...], hint: str = "") -> None:
    """A prompt template that is a format string with ``{question}`` and no field outside ``allowed``."""
    try:
        fields = template_fields(template)
    except ValueError as error:
        raise ValueError(f"prompt_template is not a format string ({error}); write {{{{ and }}}} for literal "
                         f"braces") from None
    unknown = fields - set(allowed)
    if unknown:
        named = ["{" + f + "}" for f in allowed]
        raise ValueError(f"prompt_template may use {', '.join(named[:-1])} and {named[-1]} only, but got "
                         f"{', '.join(sorted('{' + f + '}' for f in unknown))}{hint}")
    if "question" not in fields:
        raise ValueError("prompt_template must contain {question}, where each question goes")


def _task(value) -> str | None:
    """``data.task``, ``reasoning`` when left out (the lab's tasks were the only ones once)."""
    return value.get("task", "reasoning") if isinstance(value, dict) else getattr(value, "task", None)


LMAuditData = Annotated[Annotated[ReasoningAuditData, Tag("reasoning")]
                        | Annotated[QuestionsAuditData, Tag("questions")], Discriminator(_task)]


class TracesProbe(StrictModel):
    """Greedy traces of every model on every question, each checked step by step."""

    max_new_tokens: int = Field(160, ge=1, le=32_768)
    batch_size: int = Field(32, ge=1, le=4096)
    stop: str | None = Field(None, min_length=1, description="cut each trace before this string's first "
                             "appearance; default for the lab's tasks: a newline when data.few_shot > 0 (each "
                             "solved example is one line); for your questions: '\\nQuestion:' with few-shot text "
                             "prompts (a model that follows them goes on to a next question); otherwise none: "
                             "each model's end-of-sequence / end-of-turn token ends it")


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


class Segmentation(StrictModel):
    """How a trace is cut into sentences (the provenance probe's actions)."""

    terminators: str = Field(TERMINATORS, min_length=1, description="characters that end a sentence (a decimal "
                             "point does not)")
    think: tuple[str, str] | None = Field(THINK, description="reasoning-block markers: boundaries that belong to "
                                          "no sentence (null: none)")

    @model_validator(mode="after")
    def _markers(self):
        if self.think is not None and not all(self.think):
            raise ValueError("think markers must be two non-empty strings, e.g. ['<think>', '</think>'], or null")
        return self


class ProvenanceProbe(StrictModel):
    """Where each sentence of every other student's traces came from (Liu et al. 2025): each sentence scored under
    the teacher, the original student (before distillation) and the student itself; runs when ``original_student``
    names one of the students."""

    original_student: str | None = Field(None, description="the student before distillation (one of students:)")
    alpha: float = Field(ALPHA, ge=0, le=1, description="shared: all three probabilities within alpha")
    beta: float = Field(BETA, ge=0, le=1, description="teacher / student: p_T - p_S above beta (or below -beta)")
    per: Literal["token", "character"] = Field("token", description="token: exp of the mean token log-probability "
                                                "(the paper's); character: per character (tokenizer-free)")
    n: int | None = Field(None, ge=1, le=100_000, description="the first n questions, tasks in order (null: all)")
    batch_size: int = Field(16, ge=1, le=4096)
    segmentation: Segmentation = Field(default_factory=Segmentation)
    alphas: list[float] = Field([0.0, 0.025, 0.05, 0.1, 0.15, 0.2], min_length=1, description="the sensitivity "
                                "chart's alphas")
    betas: list[float] = Field([0.05, 0.1, 0.15, 0.2, 0.3], min_length=1, description="the sensitivity chart's betas")
    n_resamples: int = Field(1000, ge=100, le=100_000, description="bootstrap resamples of trajectories")

    @model_validator(mode="after")
    def _grid(self):
        bad = [v for v in (*self.alphas, *self.betas) if not 0 <= v <= 1]
        if bad:
            raise ValueError(f"alphas and betas are differences of probabilities, in [0, 1], but got {bad[0]}")
        return self

    @property
    def enabled(self) -> bool:
        return self.original_student is not None


CUE_WORDS = ("wait", "therefore", "alternatively", "but", "however", "so", "thus", "hmm", "check", "because")


class CrosscoderTraining(StrictModel):
    """How the crosscoder is trained (on the training loop: checkpoints, exact resume)."""

    kind: Literal["batchtopk", "l1"] = Field("batchtopk", description="batchtopk (Minder et al. 2025: fewer "
                                            "artifacts) or l1 (Anthropic's crosscoder)")
    expansion: int = Field(8, ge=1, le=256, description="latents per dimension of the wider model")
    k: int = Field(32, ge=1, le=4096, description="batchtopk: latents kept per example on average")
    l1_weight: float = Field(1.0, ge=0, description="l1: the penalty's weight (warmed up over the first 5% of steps)")
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(1024, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0


class SteeringSettings(StrictModel):
    """Steering: a latent's decoder direction added at the layer while the distilled student writes its traces."""

    latents: int = Field(3, ge=0, le=64, description="the distilled student's exclusive latents steered (those "
                         "Latent Scaling calls real first, by how often they fire); 0: no steering")
    scales: list[float] = Field([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0], min_length=2, description="multiples of the "
                                "latent's largest write seen on the data (0: unsteered)")
    n: int = Field(40, ge=1, le=100_000, description="the first n questions")

    @model_validator(mode="after")
    def _unsteered(self):
        if 0.0 not in self.scales:
            raise ValueError("steering.scales must include 0.0 (the unsteered model every scale is compared with)")
        return self


class CrosscoderProbe(StrictModel):
    """Crosscoder model-diffing (Lindsey et al. 2024; Minder et al. 2025): one dictionary of latents over the
    residual streams of ``base`` and each other student at one block each, trained on every question followed by
    the teacher's, the base's and that student's traces; runs when ``base`` names one of the students."""

    base: str | None = Field(None, description="the model before distillation (one of students:)")
    students: list[str] | None = Field(None, min_length=1, description="the students compared with the base "
                                       "(null: every other student)")
    layer: int | None = Field(None, ge=0, description="the block whose output is read in every model (null: half "
                              "depth of each)")
    n: int | None = Field(200, ge=2, le=100_000, description="the first n questions (null: all)")
    batch_size: int = Field(16, ge=1, le=4096)
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="how the activations are stored")
    keep_special: bool = Field(False, description="keep BOS, padding and special (chat-template) tokens")
    eval_share: float = Field(0.1, gt=0, lt=1, description="share of questions held out: FVE, loss recovered and "
                              "ablation are measured on their texts")
    training: CrosscoderTraining = Field(default_factory=CrosscoderTraining)
    low: float = Field(0.3, gt=0, lt=1, description="relative decoder norm below which a latent is the base's alone")
    high: float = Field(0.7, gt=0, lt=1, description="... above which it is the distilled student's alone")
    contexts: int = Field(8, ge=1, le=100, description="top-activating contexts kept per latent")
    shown: int = Field(12, ge=1, le=1000, description="exclusive latents shown per side in the report")
    cue_words: list[str] = Field(list(CUE_WORDS), description="words a latent is labelled by when it fires on them")
    steering: SteeringSettings = Field(default_factory=SteeringSettings)

    @model_validator(mode="after")
    def _thresholds(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high}): latents between them are shared")
        return self

    @property
    def enabled(self) -> bool:
        return self.base is not None


class LMProbes(StrictModel):
    traces: TracesProbe = Field(default_factory=TracesProbe)
    calibration: AnswerCalibrationProbe = Field(default_factory=AnswerCalibrationProbe)
    representations: LMRepresentationsProbe = Field(default_factory=LMRepresentationsProbe)
    provenance: ProvenanceProbe = Field(default_factory=ProvenanceProbe)
    crosscoder: CrosscoderProbe = Field(default_factory=CrosscoderProbe)


class LMAuditConfig(AuditSettings):
    """One audit of a language-model teacher against its students on reasoning questions, written to ``run_dir``."""

    data: LMAuditData = Field(default_factory=ReasoningAuditData)
    probes: LMProbes = Field(default_factory=LMProbes)
    samples: int = Field(3, ge=0, le=100, description="sample traces per kind and student in the report")

    @model_validator(mode="after")
    def _names(self):
        if "teacher" in self.students:
            raise ValueError("'teacher' names the teacher; give students other names")
        for name in self.students:
            check_model_name(name)
        if self.students:
            check_original_student(self.probes.provenance.original_student, list(self.students))
            check_base(self.probes.crosscoder.base, list(self.students), self.probes.crosscoder.students)
        return self


def check_original_student(name: str | None, students: list[str]) -> None:
    """``probes.provenance.original_student`` names one of the students, and another student is left to trace."""
    check_reference_student("probes.provenance.original_student", name, students,
                            "provenance traces the sentences of distilled students")


def check_base(name: str | None, students: list[str], compared: list[str] | None = None) -> None:
    """``probes.crosscoder.base`` names one of the students, and another student is left to compare it with
    (``compared``: ``probes.crosscoder.students``, each one of the students other than the base)."""
    for other in compared or []:
        if other not in students or other == name:
            raise ValueError(f"probes.crosscoder.students names {other!r}, which is "
                             f"{'the base itself' if other == name else 'none of the students'} "
                             f"({', '.join(students)}).{did_you_mean(other, students)} List students to compare "
                             f"with the base.")
    check_reference_student("probes.crosscoder.base", name, students,
                            "the crosscoder compares it with distilled students")


def check_reference_student(key: str, name: str | None, students: list[str], why: str) -> None:
    """Config key ``key`` (None: the probe is off) names one of the students, the model before distillation, and at
    least one other student is left for the probe (``why`` it needs one)."""
    if name is None:
        return
    if name not in students:
        raise ValueError(f"{key} is {name!r}, which is none of the students ({', '.join(students)})."
                         f"{did_you_mean(name, students)} Give the student before distillation, audited beside the "
                         f"others.")
    if len(students) < 2:
        raise ValueError(f"{key} is {name!r}, the only student: {why}, so add at least one more student")


def check_model_name(name: str) -> None:
    """A model's name becomes a folder of the run directory: letters, digits, ``_``, ``.``, ``-`` only."""
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name) or name in (".", ".."):
        suggestion = re.sub(r"[^\w.-]+", "_", str(name))
        raise ValueError(f"Expected a model name of letters, digits, '_', '.' or '-' (it names a folder of the run "
                         f"directory), but got {name!r}. Rename it, e.g. {suggestion!r}.")
