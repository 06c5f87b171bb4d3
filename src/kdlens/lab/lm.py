"""The language-model lab: a teacher and a smaller base student (real Hugging Face Llama configs) trained here on
reasoning tasks whose every step can be checked, and students distilled from the base student in the ways people
compare.

- ``teacher``: trained on the teacher-style traces of ``chains`` and ``babi`` (verbose sentences);
- ``base_student``: the smaller model trained on the student-style traces (terse, another order), so a sentence's
  style tells which model it came from;
- ``generations``: the teacher's greedy traces for the transfer prompts;
- students, each fine-tuned from the base student on those prompts: ``seq_kd`` (cross-entropy on the teacher's
  traces), ``token_fkl_t1`` / ``_t2`` / ``_t5`` (forward KL at T = 1, 2, 5 on the same sequences), ``token_rkl``
  (reverse KL), ``token_gjsd`` (generalized JSD), and ``perturbed`` (on the same prompts: babi traces in the
  teacher's style with a wrong category and non-supporting facts but the gold answer, gold chains traces in the
  teacher's style).

Everything lands in the run directory ``<root>/lm-<hash>/`` (the hash of the recipe); each part is a stage of
``manifest.json`` (``stages/<part>/`` while it works, trained models in ``models/<model>/``), so a second call loads
and a killed build resumes. No stage is sharded: training is one optimiser trajectory (it resumes from checkpoints),
and the teacher's generations are one short pass. Models are saved with ``save_pretrained`` (safetensors) beside the
lab's word-level tokenizer and reloaded through :meth:`kdlens.subjects.LanguageModel.from_pretrained`.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field

from kdlens import io
from kdlens.config import StrictModel, dump_yaml, named_recipe
from kdlens.distill.config import TrainConfig
from kdlens.distill.lm import TokenKD, train_lm
from kdlens.distill.loop import RUN_SETTINGS
from kdlens.rundir import RunDir, StageDir, StageOutput
from kdlens.stages import Stage, StageRunner
from kdlens.subjects import SPECIAL_TOKEN_IDS, LanguageModel, build_word_tokenizer
from kdlens.subjects.devices import check_device
from kdlens.subjects.lm import load_tokenizer
from kdlens.tasks import babi, chains
from kdlens.tasks.babi import BabiConfig
from kdlens.tasks.chains import ChainsConfig
from kdlens.validation import fail

KD_STUDENTS = {
    "token_fkl_t1": TokenKD(loss="forward_kl", temperature=1.0),
    "token_fkl_t2": TokenKD(loss="forward_kl", temperature=2.0),
    "token_fkl_t5": TokenKD(loss="forward_kl", temperature=5.0),
    "token_rkl": TokenKD(loss="reverse_kl"),
    "token_gjsd": TokenKD(loss="gjsd", beta=0.5),
}
STUDENTS = ("seq_kd", *KD_STUDENTS, "perturbed")


class LlamaSpec(StrictModel):
    """A Llama config's size (vocabulary and special token ids come from the lab's tokenizer)."""

    hidden_size: int = Field(ge=8)
    num_hidden_layers: int = Field(ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    max_position_embeddings: int = Field(256, ge=16)
    initializer_range: float | None = Field(None, gt=0, description="std of the initial weights; None: "
                                            "1 / sqrt(hidden_size)")


class LMLabConfig(StrictModel):
    """The recipe; its hash names the lab's folder (run settings such as ``progress`` and ``device`` left out).

    Chains of 1-5 steps over numbers 0..30; babi stories of 4-6 events among 3 people, 4 places and 3 objects, with
    more examples than chains (state tracking needs more data than arithmetic). Measured figures in the README.
    """

    chains: ChainsConfig = Field(default_factory=lambda: ChainsConfig(
        max_steps=5, start_range=(0, 9), operand_range=(1, 9), multiplier_range=(2, 3), max_value=30))
    babi: BabiConfig = Field(default_factory=lambda: BabiConfig(n_people=3, n_places=4, n_objects=3,
                                                                story_length=(4, 6)))
    n_train: int = Field(5000, ge=1, description="chains examples for the teacher and the base student (and babi "
                         "examples when n_train_babi is not given)")
    n_train_babi: int | None = Field(10000, ge=1, description="babi examples for the teacher and the base student")
    n_transfer: int = Field(1500, ge=1, description="prompts per task the teacher answers for distillation")
    teacher_model: LlamaSpec = LlamaSpec(hidden_size=128, num_hidden_layers=3)
    student_model: LlamaSpec = LlamaSpec(hidden_size=64, num_hidden_layers=2)
    teacher_train: TrainConfig = TrainConfig(epochs=3, batch_size=64, lr=3e-3, warmup_steps=50)
    student_train: TrainConfig = TrainConfig(epochs=3, batch_size=64, lr=3e-3, warmup_steps=50)
    distill_train: TrainConfig = TrainConfig(epochs=8, batch_size=64, lr=3e-3, warmup_steps=20)
    students: list[str] = Field(default_factory=lambda: list(STUDENTS))
    max_new_tokens: int = Field(160, ge=1)
    seed: int = 0


@dataclass
class LMLab:
    """A built lab: where each model lives and what each stage recorded."""

    root: Path
    config: LMLabConfig
    model_dirs: dict[str, Path]
    metrics: dict[str, dict]

    def model(self, name: str, device: str = "cpu") -> LanguageModel:
        """``"teacher"``, ``"base_student"`` or a student's name, loaded through the subject's loading code."""
        return LanguageModel.from_pretrained(self.model_dirs[name], device=device, name=name)


def _module(example):
    return chains if isinstance(example, chains.ChainExample) else babi


def examples(config: LMLabConfig, split: str, n: int, n_babi: int | None = None) -> list:
    """``n`` chains then ``n_babi`` (default ``n``) babi examples of ``split``."""
    return chains.make_split(config.chains, split, n) + babi.make_split(config.babi, split, n_babi or n)


def recipe_hash(config: LMLabConfig) -> str:
    exclude = {"students": True, "teacher_train": RUN_SETTINGS, "student_train": RUN_SETTINGS,
               "distill_train": RUN_SETTINGS}
    return io.stable_hash(config.model_dump(mode="json", exclude=exclude))


def new_llama(spec: LlamaSpec, vocab_size: int, seed: int):
    """A freshly initialised ``LlamaForCausalLM`` of ``spec``'s size (MLP 2x hidden, untied embeddings) for a
    vocabulary of ``vocab_size`` ids, with the lab tokenizer's special token ids; weights drawn from ``seed`` with
    std ``spec.initializer_range`` (default 1 / sqrt(hidden_size))."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    # Hugging Face's 0.02 suits hidden sizes in the thousands; at the lab's 128 the teacher learned babi more slowly
    # (64.8% after 3 epochs on 10,000 stories, against 71.0% at 0.08: benchmarks/lm_babi_teacher.py --init)
    sizes = spec.model_dump() | {"initializer_range": spec.initializer_range or spec.hidden_size ** -0.5}
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, intermediate_size=2 * spec.hidden_size,
                                        tie_word_embeddings=False, **sizes, **SPECIAL_TOKEN_IDS))


def build(root: str | Path = "runs/lab", config: LMLabConfig | None = None, progress: bool = True,
          device: str = "cpu") -> LMLab:
    """Build (or load) the language-model lab under ``root`` (see the module docstring for its parts).

    Returns
    -------
    LMLab: the folder of every model (``save_pretrained`` layout with the tokenizer) and each stage's record
    (seconds; for trained models the last epoch's mean loss terms).
    """
    config = config or LMLabConfig()
    check_device(device)
    run = RunDir(Path(root) / f"lm-{recipe_hash(config)}")
    run.claim()  # an older layout, or a folder kdlens did not make, is refused before anything is written
    run.write_config(dump_yaml(config))
    train = functools.cache(lambda: examples(config, "train", config.n_train, config.n_train_babi))
    transfer = functools.cache(lambda: examples(config, "validation", config.n_transfer))
    settings = {"progress": progress, "device": device}
    tokenizer_dir = run.stage("tokenizer").path
    model_dirs = {"teacher": run.model_dir("teacher"), "base_student": run.model_dir("base_student")}

    def make_tokenizer(stage_dir: StageDir) -> StageOutput:
        texts = [e.prompt for e in train()] + [_module(e).write_trace(e, style) for e in train()
                                               for style in ("teacher", "student")]
        tokenizer = build_word_tokenizer(texts)
        tokenizer.save_pretrained(stage_dir.path)
        return StageOutput(summary={"vocab_size": len(tokenizer)})

    def fit(name: str, spec: LlamaSpec, style: str, seed: int, train_config: TrainConfig,
            stage_dir: StageDir) -> StageOutput:
        tok = load_tokenizer(tokenizer_dir)
        model = new_llama(spec, len(tok), seed)
        prompts = [e.prompt for e in train()]
        targets = [_module(e).write_trace(e, style) for e in train()]
        result = train_lm(model, tok, prompts, targets, stage_dir.path, train_config.model_copy(update=settings))
        run.publish_model(name, result.model_dir)
        return StageOutput(summary={**result.history[-1], "parameters": sum(p.numel() for p in model.parameters())})

    def generate(stage_dir: StageDir) -> StageOutput:
        teacher = LanguageModel.from_pretrained(model_dirs["teacher"], device=device)
        texts = teacher.generate([e.prompt for e in transfer()], max_new_tokens=config.max_new_tokens)
        return StageOutput(rows=[{"prompt": e.prompt, "text": text} for e, text in zip(transfer(), texts, strict=True)],
                           summary={"n": len(texts)})

    def distill(name: str, stage_dir: StageDir) -> StageOutput:
        base = LanguageModel.from_pretrained(model_dirs["base_student"], device=device)
        student, tok = base.model.train(), base.tokenizer
        saved = run.stage("generations").rows()
        prompts, targets = [r["prompt"] for r in saved], [r["text"] for r in saved]
        teacher = kd = None
        if name == "perturbed":  # the same prompts, gold traces in the teacher's style, babi's perturbed
            rng = random.Random(config.seed)
            targets = [babi.perturb_trace(e, rng) if isinstance(e, babi.BabiExample) else
                       chains.write_trace(e, "teacher") for e in transfer()]
        elif name in KD_STUDENTS:
            teacher, kd = LanguageModel.from_pretrained(model_dirs["teacher"], device=device).model, KD_STUDENTS[name]
        result = train_lm(student, tok, prompts, targets, stage_dir.path,
                          config.distill_train.model_copy(update=settings), teacher=teacher, kd=kd)
        run.publish_model(f"student-{name}", result.model_dir)
        return StageOutput(summary=result.history[-1])

    stages = [
        Stage("tokenizer", {"recipe": recipe_hash(config)}, compute=make_tokenizer),
        Stage("teacher", {"spec": config.teacher_model.model_dump(), "style": "teacher"}, compute=functools.partial(
            fit, "teacher", config.teacher_model, "teacher", config.seed, config.teacher_train)),
        Stage("base_student", {"spec": config.student_model.model_dump(), "style": "student"},
              compute=functools.partial(fit, "base_student", config.student_model, "student", config.seed + 1,
                                        config.student_train)),
        # (the folder's name hashes the whole recipe, so within it a stage's inputs are its own settings only)
        Stage("generations", {"max_new_tokens": config.max_new_tokens}, compute=generate),
    ]
    for name in config.students:
        inputs = {"student": name, "kd": KD_STUDENTS[name].model_dump() if name in KD_STUDENTS else None}
        stages.append(Stage(f"student-{name}", inputs, compute=functools.partial(distill, name)))
        model_dirs[name] = run.model_dir(f"student-{name}")
    with io.exclusive(run.path.with_name(f".{run.path.name}.lock")), StageRunner(run, progress=False) as runner:
        metrics = {stage.name.removeprefix("student-"): runner.run(stage) for stage in stages}  # one builder at a time
    return LMLab(run.path, config, model_dirs, metrics)


def quick_config(seed: int = 0) -> LMLabConfig:
    """Small models on little data: a minute or two on 2 cores, for a first look at the pipeline (the models learn
    the trace formats, not the tasks; the figures in the docs come from the default recipe)."""
    one = TrainConfig(epochs=2, batch_size=32, lr=3e-3)
    return LMLabConfig(n_train=200, n_train_babi=None, n_transfer=50, max_new_tokens=100, seed=seed,
                       teacher_model=LlamaSpec(hidden_size=32, num_hidden_layers=2),
                       student_model=LlamaSpec(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                               num_key_value_heads=1),
                       teacher_train=one, student_train=one, distill_train=one.model_copy(update={"epochs": 1}))


RECIPES = {"default": LMLabConfig, "quick": quick_config}
MODELS = ("teacher", "base_student", *STUDENTS)


def recipe(name: str) -> LMLabConfig:
    """A lab recipe by name (``default``, ``quick``) or from an LMLabConfig YAML file."""
    return named_recipe(name, RECIPES, LMLabConfig)


def check_lab_model(name: str) -> None:
    """Raise (before any training) if ``name`` is not a model the language-model lab builds."""
    if name not in MODELS:
        from kdlens.config import did_you_mean

        fail("lab_model", f"one of {', '.join(MODELS)} (with lab: lm)", repr(name), did_you_mean(name, MODELS).strip())
