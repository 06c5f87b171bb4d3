"""The language-model audit: a teacher against its students on reasoning questions: the lab's, whose every step a
checker verifies (``data: {task: reasoning}``), or yours (``data: {task: questions}``).

:meth:`LanguageModelKind.prepare` reads the questions (a bad file fails before any model loads), loads the models
(local folders, GGUF files or the lab; files and lab names checked first) and makes each model's prompts; the
stages then run in order (each model's generations under the ``traces`` line, then traces, calibration,
representations), each cached in the run directory.
"""

from __future__ import annotations

from kdlens.audit.common import TEACHER
from kdlens.audit.kind import Headline, Prepared
from kdlens.audit.lm import crosscoder, provenance
from kdlens.audit.lm.config import (
    LMAuditConfig,
    QuestionsAuditData,
    check_base,
    check_model_name,
    check_original_student,
)
from kdlens.audit.lm.crosscoder_analysis import run_pair
from kdlens.audit.lm.data import lab_tasks, load_questions, prompted
from kdlens.audit.lm.headline import headline
from kdlens.audit.lm.stages import calibration_stage, generation_stage, representations_stage, traces_stage
from kdlens.audit.scorecard import Wording
from kdlens.rundir import RunDir
from kdlens.stages import StageRunner
from kdlens.subjects.lm import LanguageModel
from kdlens.subjects.lm.chat import end_of_turn_ids
from kdlens.subjects.lm.compress import parameter_count, weight_bytes
from kdlens.subjects.sources import load_models


def _lab_tasks(config: LMAuditConfig) -> LMAuditConfig:
    """With a lab teacher, the tasks are drawn as the lab drew them unless the config says how."""
    data = lab_tasks(config.data, config.teacher)
    return config if data is config.data else config.model_copy(update={"data": data})


def _models(config: LMAuditConfig, teacher, students, progress: bool, device: str) -> dict[str, LanguageModel]:
    if teacher is None and config.teacher is None:
        raise ValueError("Expected a teacher, but got none. Give `teacher:` in the config or teacher=... to run().")
    if students is None and not config.students:
        raise ValueError("Expected at least one student, but got none. Give `students:` in the config "
                         "(name: source) or students={...} to run().")
    given = {**({TEACHER: teacher} if teacher is not None else {}), **(students or {})}
    for name, model in given.items():
        if not isinstance(model, LanguageModel):
            raise TypeError(f"Expected model {name!r} to be a kdlens.subjects.LanguageModel, but got "
                            f"{type(model).__name__}. Wrap it: LanguageModel(model, tokenizer, name).")
    for name in students or {}:
        check_model_name(name)
    if TEACHER in (students or {}):
        raise ValueError(f"Expected student names other than {TEACHER!r}. Rename the student.")
    sources = {**({TEACHER: config.teacher} if teacher is None else {}),
               **(config.students if students is None else {})}
    loaded = load_models(sources, "lm", device, progress)
    names = [TEACHER, *(students if students is not None else config.students)]
    return {name: given[name] if name in given else loaded[name] for name in names}


def default_stop(data) -> str | None:
    """Where a trace ends by default: before a next example's first line when few-shot text prompts show the model
    solved examples one after another (a newline for the lab's one-line examples); None otherwise, so each model's
    end-of-sequence or end-of-turn token ends it."""
    if not data.few_shot or getattr(data, "chat", False):
        return None
    if not isinstance(data, QuestionsAuditData):
        return "\n"
    head = data.template.split("{examples}", 1)[-1].split("{", 1)[0].strip()
    return "\n" + head if head else "\n\n"


def model_settings(config: LMAuditConfig, model: LanguageModel, settings: dict) -> dict:
    """The generation settings of one model: ``settings``, with chat prompts its end-of-turn ids as ``stop_ids``."""
    turn_ends = end_of_turn_ids(model) if getattr(config.data, "chat", False) else []
    return {**settings, **({"stop_ids": turn_ends} if turn_ends else {})}


class LanguageModelKind:
    """Hugging Face causal language models that answer in steps: the lab's chains and babi, or your questions."""

    name = "lm"
    config_type = LMAuditConfig
    tasks = ("reasoning", "questions")
    lines = ("traces", "calibration", "representations", "provenance", "crosscoder")

    def prepare(self, config: LMAuditConfig, teacher, students, baselines, progress: bool,
                device: str = "cpu") -> Prepared:
        if baselines:
            raise ValueError("Expected no baselines in a language-model audit (not supported yet), but got "
                             f"{sorted(baselines)}. Pass them as students to see them beside the others.")
        config = _lab_tasks(config)
        bare = load_questions(config.data)
        names = list(students) if students is not None else list(config.students)
        check_original_student(config.probes.provenance.original_student, names)
        check_base(config.probes.crosscoder.base, names, config.probes.crosscoder.students)
        models = _models(config, teacher, students, progress, device)
        for model in models.values():
            model.model.eval()
        asked = prompted(config.data, bare, models)
        return Prepared(config, models, [n for n in models if n != TEACHER],
                        extra={"bare": bare, "asked": asked, "questions": asked[TEACHER]})

    def run_stages(self, audit: Prepared, runner: StageRunner) -> None:
        config, models, asked = audit.config, audit.models, audit.extra["asked"]
        probes, run, yours = config.probes, runner.run_dir, isinstance(config.data, QuestionsAuditData)
        stop = probes.traces.stop or default_stop(config.data)
        settings = {"max_new_tokens": probes.traces.max_new_tokens, "batch_size": probes.traces.batch_size,
                    "decoding": "greedy", **({"stop": stop} if stop is not None else {})}
        shown = None
        if yours or config.data.prompt_template != "{question}":
            shown = [q.prompt for q in audit.extra["bare"]]
        with runner.line("traces"):
            for name, model in models.items():
                runner.run(generation_stage(name, model, asked[name], model_settings(config, model, settings)),
                           line="traces")
            runner.run(traces_stage(run, models, asked[TEACHER], settings, shown), line="traces")
        if probes.calibration.enabled:
            runner.run(calibration_stage(run, models, asked, probes.calibration.n_bins,
                                         probes.calibration.batch_size))
        else:
            runner.skip("calibration")
        if probes.representations.enabled:
            texts_of = audit.extra["bare"] if yours else asked[TEACHER]  # one text for every model
            runner.run(representations_stage(run, models, texts_of, probes.representations.n,
                                             probes.representations.batch_size))
        else:
            runner.skip("representations")
        if probes.provenance.enabled:
            with runner.line("provenance"):
                runner.run(provenance.scores_stage(run, models, asked, probes.provenance), line="provenance")
                upstream = {name: runner.inputs_hash(name) for name in ("traces", "provenance-scores")}
                runner.run(provenance.shares_stage(run, probes.provenance, upstream), line="provenance")
        else:
            runner.skip("provenance-scores")
            runner.skip("provenance")
        if probes.crosscoder.enabled:
            self._crosscoders(audit, runner, settings)
        else:
            for d in audit.students:
                for name in crosscoder.names(d).values():
                    runner.skip(name)
            runner.skip("crosscoder")

    def _crosscoders(self, audit: Prepared, runner: StageRunner, settings: dict) -> None:
        """The crosscoder stages of the base against each other student (:mod:`kdlens.audit.lm.crosscoder`)."""
        config, models, asked = audit.config, audit.models, audit.extra["asked"]
        probe, run = config.probes.crosscoder, runner.run_dir
        with runner.line("crosscoder"):
            for d in audit.students:
                if d == probe.base or (probe.students is not None and d not in probe.students):
                    for name in crosscoder.names(d).values():
                        runner.skip(name)
                    continue
                stage = crosscoder.names(d)
                read = crosscoder.texts_of(run, asked, audit.extra["bare"], probe.base, d, probe.n)
                run_pair(runner, models, probe.base, d, read, probe)
                if probe.steering.latents:
                    mine = model_settings(config, models[d], settings)
                    runner.run(crosscoder.steering_stage(run, models, probe.base, d, asked[d], mine, probe,
                                                         config.probes.provenance,
                                                         runner.inputs_hash(stage["analysis"])), line="crosscoder")
                else:
                    runner.skip(stage["steering"])

    def headline(self, audit: Prepared, run: RunDir) -> Headline:
        config, n = audit.config, len(audit.extra["questions"])
        if isinstance(config.data, QuestionsAuditData):
            data = {"task": "questions", "primary": "test", "shifted": None, "tasks": ["questions"],
                    "splits": {"test": n}, "has_masks": False, "has_counterfactuals": False, "classes": None,
                    "prompt_template": config.data.template, "few_shot": config.data.few_shot,
                    "path": config.data.path, "chat": config.data.chat, "system_prompt": config.data.system_prompt,
                    "checked": sorted({q.rule.describe() for q in audit.extra["questions"]}),
                    "answer": config.data.answer.model_dump(mode="json")}
        else:
            data = {"task": "reasoning", "primary": config.data.split, "shifted": None,
                    "tasks": [t for t in ("chains", "babi") if getattr(config.data, t) is not None],
                    "splits": {config.data.split: n}, "has_masks": False, "has_counterfactuals": False,
                    "classes": None, "prompt_template": config.data.prompt_template, "few_shot": config.data.few_shot}
        models = {name: {"parameters": parameter_count(m.model), "weights_mb": weight_bytes(m.model) / 2 ** 20,
                         "role": "teacher" if name == TEACHER else "student"} for name, m in audit.models.items()}
        return headline(run, data, audit.students, {"models": models, "probes": config.probes.model_dump(mode="json")},
                        samples=config.samples)

    def wording(self, audit: Prepared) -> Wording:
        return Wording(wrong_reasons="its trace is wrong (a wrong step or sentence)", unit="questions",
                       followed="answers, steps", pareto_axes=("accuracy", "step_agreement"))


LANGUAGE_MODEL = LanguageModelKind()
