"""``kdlens audit CONFIG`` for language models that reason in steps: every probe a cached stage, then
``results.json``.

Stages, under ``<run_dir>/stages/``:

- ``generate-<model>``: each model's greedy trace for every question (``generations/<model>/texts.json``), one
  stage per model, so a killed run or an added student generates only what is missing (a model's traces are
  saved a few batches at a time while it generates, so a kill loses at most one chunk);
- ``traces``: the traces checked step by step by the task's checker:
  ``figures.json`` holds :func:`kdlens.probes.traces.trace_figures` per model (accuracy, trace accuracy, the
  trace x answer table with P(CA | CT), P(CA | IT) and the independence test, agreement, step agreement and BLEU
  against the teacher, all per task and per number of steps); ``examples.jsonl`` one row per (model, question)
  with each sentence marked;
- ``calibration``: the probability each model gives to the answer it wrote, its ECE and reliability curve;
- ``representations``: linear CKA between the teacher's and each student's layers, hidden states averaged per word
  on each question followed by the teacher's trace (tokenizers may differ).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from kdlens import io
from kdlens import measures as M
from kdlens.audit.common import TEACHER, cached_or_seconds, forget_disabled, read_rows, write_stage
from kdlens.audit.lm_config import LMAuditConfig, LMSource, ReasoningAuditData, check_model_name
from kdlens.audit.lm_results import build_lm_results
from kdlens.config import dump_yaml
from kdlens.probes import traces as T
from kdlens.probes.lm_representations import layer_cka
from kdlens.progress import stage_display
from kdlens.stages import Stages
from kdlens.subjects import LanguageModel
from kdlens.tasks import babi, chains

STAGES = ("traces", "calibration", "representations")
POOL_NOTE = ("Hidden states are averaged over each word's tokens (through character offsets), so models with "
             "different tokenizers give one row per word; the text is each question followed by the teacher's trace.")


def load_questions(data: ReasoningAuditData) -> list:
    """The first ``data.n`` questions of ``data.split`` of each task given: chains first, then babi."""
    out = []
    if data.chains is not None:
        out += chains.make_split(data.chains, data.split, data.n)
    if data.babi is not None:
        out += babi.make_split(data.babi, data.split, data.n)
    return out


def prompted(data: ReasoningAuditData, questions: list) -> list:
    """``questions`` with each prompt put through ``data.prompt_template``, with ``data.few_shot`` solved train
    questions of its task (prompt, then the teacher-style trace, one per line) as ``{examples}``."""
    examples = {}
    for name, module, config in (("chains", chains, data.chains), ("babi", babi, data.babi)):
        shots = module.make_split(config, "train", data.few_shot) if config is not None and data.few_shot else []
        examples[name] = "".join(f"{e.prompt} {module.write_trace(e, 'teacher')}\n" for e in shots)
    return [dataclasses.replace(q, prompt=data.prompt_template.format(question=q.prompt,
                                                                      examples=examples[T.task_name(q)]))
            for q in questions]


def _lab_tasks(config: LMAuditConfig) -> LMAuditConfig:
    """With a lab teacher, the tasks are drawn as the lab drew them unless the config says how."""
    source, data = config.teacher, config.data
    if source is None or source.lab is None:
        return config
    from kdlens.lab.lm import recipe

    lab = recipe(source.lab_recipe)
    update = {task: getattr(lab, task) for task in ("chains", "babi") if task not in data.model_fields_set}
    return config.model_copy(update={"data": data.model_copy(update=update)})


def _load(sources: dict[str, LMSource], device: str, progress: bool) -> dict[str, LanguageModel]:
    """Every source's model; files and lab names are checked for all of them before any is loaded or built."""
    from kdlens.lab.lm import check_lab_model, lab_models

    for name, source in sources.items():
        if source.checkpoint is not None and not Path(source.checkpoint).is_dir():
            raise FileNotFoundError(f"Expected the checkpoint of model {name!r} to be a local folder in the "
                                    f"save_pretrained layout (config.json, *.safetensors, tokenizer files), but got "
                                    f"{source.checkpoint} (no such folder).")
        if source.lab is not None:
            check_lab_model(source.lab_model)
    loaded = {name: LanguageModel.from_pretrained(s.checkpoint, dtype=s.dtype, device=device,
                                                  trust_remote_code=s.trust_remote_code, name=name)
              for name, s in sources.items() if s.checkpoint is not None}
    wanted = {name: (s.lab_root, s.lab_recipe, s.lab_model) for name, s in sources.items() if s.lab is not None}
    if wanted:
        loaded.update(lab_models(wanted, device=device, progress=progress))
    return {name: loaded[name] for name in sources}


def _models(config: LMAuditConfig, teacher, students, progress: bool) -> dict[str, LanguageModel]:
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
    loaded = _load(sources, config.device, progress)
    names = [TEACHER, *(students if students is not None else config.students)]
    return {name: given[name] if name in given else loaded[name] for name in names}


def _digest(model: LanguageModel) -> str:
    return io.tensors_digest(model.model.state_dict())


def _questions_digest(questions: list) -> str:
    return io.stable_hash([[q.prompt, q.answer] for q in questions])


GENERATION_CHUNK = 4  # batches of traces saved at a time: a killed generation resumes after the last chunk


def _read_partial(path: Path) -> list[str]:
    """Traces saved so far (``partial.jsonl``: one line per chunk, ``{"start": i, "texts": [...]}``), up to the
    first line that is torn or out of order (a kill can land mid-write); the file is cut back to what was kept."""
    if not path.is_file():
        return []
    texts, kept = [], []
    for line in path.read_text().splitlines():
        try:
            chunk = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(chunk, dict) or chunk.get("start") != len(texts):
            break
        texts += chunk["texts"]
        kept.append(line)
    io.atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return texts


def _texts(run_dir: Path, name: str, model: LanguageModel, questions: list, settings: dict,
           say: Callable[[str], None] | None = None) -> list[str]:
    """The model's traces: a stage of its own (``generate-<name>``, files in ``stages/generations/<name>/``), so each
    model is generated once, across interrupted runs and runs that add a student. Within the stage, every
    ``GENERATION_CHUNK`` batches are appended to ``partial.jsonl``: a killed run resumes after the last chunk."""
    folder = run_dir / "stages" / "generations" / name
    inputs = {"model": _digest(model), "questions": _questions_digest(questions), "settings": settings}

    def generate() -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / "partial.jsonl"
        texts = _read_partial(partial)
        step = settings["batch_size"] * GENERATION_CHUNK
        for start in range(len(texts), len(questions), step):
            if say is not None:
                say(f"{name}: {start}/{len(questions)} traces")
            chunk = T.generate_traces(model, questions[start:start + step], max_new_tokens=settings["max_new_tokens"],
                                      batch_size=settings["batch_size"], stop=settings.get("stop"))
            with open(partial, "a") as f:
                f.write(json.dumps({"start": start, "texts": chunk}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            texts += chunk
        io.atomic_write_json(folder / "texts.json", {"texts": texts})
        partial.unlink(missing_ok=True)
        return {"n": len(texts)}

    Stages(run_dir).run(f"generate-{name}", inputs, generate, folder=folder)
    return io.read_json(folder / "texts.json")["texts"]


def traces_stage(run_dir: Path, models: dict[str, LanguageModel], questions: list, max_new_tokens: int = 160,
                 batch_size: int = 32, say: Callable[[str], None] | None = None, stop: str | None = None,
                 shown: list[str] | None = None) -> dict:
    """Greedy traces of every model, checked, with fidelity to the teacher's (see the module docstring); each trace
    cut before ``stop`` when given; ``say`` hears how far generation has come ("seq_kd: 256/600 traces");
    ``shown`` (one per question) is the question each ``examples.jsonl`` row shows, when the prompt wraps it.

    Returns
    -------
    dict: the stage summary: per model ``accuracy`` and ``trace_accuracy`` (students also ``step_agreement``).
    """
    settings = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "decoding": "greedy",
                **({"stop": stop} if stop is not None else {})}
    inputs = {"stage": "traces", "models": {n: _digest(m) for n, m in models.items()},
              "questions": _questions_digest(questions), "settings": settings}
    folder = run_dir / "stages" / "traces"

    texts = {name: _texts(run_dir, name, model, questions, settings, say) for name, model in models.items()}

    def compute() -> dict:
        figures = {"n": len(questions), "settings": settings, "models": {}}
        marked = {name: T.per_example(questions, texts[name]) for name in models}  # each sentence right or wrong
        rows = []
        for name in models:
            reference = None if name == TEACHER else texts[TEACHER]
            figures["models"][name] = T.trace_figures(questions, texts[name], teacher_texts=reference)
            steps = None if reference is None else T.per_question_step_agreement(questions, texts[name], reference)
            for i, row in enumerate(marked[name]):
                if shown is not None:
                    row["question"] = shown[i]
                if reference is not None:
                    row["agree"] = row["answer"] is not None and row["answer"] == marked[TEACHER][i]["answer"]
                    row["step_agreement"] = float(steps[i])
                rows.append({"model": name, **row})
        write_stage(folder, figures, rows)
        return {name: {k: v for k, v in entry["overall"].items() if k in ("accuracy", "trace_accuracy",
                                                                           "step_agreement")}
                for name, entry in figures["models"].items()}

    return Stages(run_dir).run("traces", inputs, compute, folder=folder)


def _saved_texts(run_dir: Path) -> dict[str, list[str]]:
    rows = read_rows(run_dir, "traces")
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["model"], []).append(row["text"])
    return out


def calibration_stage(run_dir: Path, models: dict[str, LanguageModel], questions: list, n_bins: int = 10,
                      batch_size: int = 16) -> dict:
    """The probability each model gives to the answer it wrote (given the question and its trace), its ECE and
    reliability curve, from the ``traces`` stage's texts.

    Returns
    -------
    dict: the stage summary: per model ``ece`` (None when no trace had an answer to score).
    """
    texts = _saved_texts(run_dir)
    inputs = {"stage": "calibration", "models": {n: _digest(m) for n, m in models.items()},
              "texts": io.stable_hash(texts), "n_bins": n_bins}
    folder = run_dir / "stages" / "calibration"

    def compute() -> dict:
        figures: dict = {"n_bins": n_bins, "models": {}}
        rows = []
        for name, model in models.items():
            confidence = T.answer_confidence(model, questions, texts[name], batch_size=batch_size)
            correct = torch.tensor([c.answer_correct for c in T.check_traces(questions, texts[name])])
            scored = ~torch.isnan(confidence)
            entry = {"n": len(questions), "n_scored": int(scored.sum()), "ece": None, "mean_confidence": None,
                     "accuracy": None, "reliability": None}
            if entry["n_scored"]:
                c, ok = confidence[scored], correct[scored]
                curve = M.confidence_reliability_curve(c, ok, n_bins)
                entry.update(ece=M.confidence_calibration_error(c, ok, n_bins=n_bins),
                             mean_confidence=float(c.mean()), accuracy=float(ok.double().mean()),
                             reliability={"confidence": _listed(curve.confidence), "accuracy": _listed(curve.accuracy),
                                          "count": curve.count.tolist(), "edges": curve.edges.tolist()})
            figures["models"][name] = entry
            rows += [{"model": name, "index": i, "confidence": None if math.isnan(v) else v,
                      "correct": bool(correct[i])} for i, v in enumerate(confidence.tolist())]
        write_stage(folder, figures, rows)
        return {name: {"ece": entry["ece"]} for name, entry in figures["models"].items()}

    return Stages(run_dir).run("calibration", inputs, compute, folder=folder)


def _listed(values: torch.Tensor) -> list:
    return [None if math.isnan(v) else v for v in values.tolist()]


def representations_stage(run_dir: Path, models: dict[str, LanguageModel], questions: list, n: int | None = None,
                          batch_size: int = 16) -> dict:
    """Layer-by-layer linear CKA, teacher x each student, on the first ``n`` questions followed by the teacher's
    traces (hidden states pooled per word).

    Returns
    -------
    dict: the stage summary: per student ``cka_mean_best``.
    """
    teacher_texts = _saved_texts(run_dir)[TEACHER]
    keep = slice(0, n)
    texts = [q.prompt + t for q, t in zip(questions[keep], teacher_texts[keep], strict=True)]
    inputs = {"stage": "representations", "models": {k: _digest(m) for k, m in models.items()},
              "texts": io.stable_hash(texts)}
    folder = run_dir / "stages" / "representations"

    def compute() -> dict:
        figures: dict = {"kernel": "linear", "debiased": False, "pool_note": POOL_NOTE, "n": len(texts),
                         "students": {}}
        for name, model in models.items():
            if name != TEACHER:
                figures["students"][name] = layer_cka(models[TEACHER], model, texts, batch_size=batch_size)
        figures["teacher_layers"] = next(iter(figures["students"].values()))["teacher_layers"]
        io.atomic_write_json(folder / "figures.json", figures)
        return {name: {"cka_mean_best": e["cka_mean_best"]} for name, e in figures["students"].items()}

    return Stages(run_dir).run("representations", inputs, compute, folder=folder)


def run(config: LMAuditConfig, teacher: LanguageModel | None = None,
        students: dict[str, LanguageModel] | None = None, progress: bool = True) -> dict:
    """Audit a language-model teacher against its students as ``config`` describes; returns ``results.json``'s
    content (layout in ``docs/results.md``). Called by :func:`kdlens.audit.run` for ``data: {task: reasoning}``."""
    config = _lab_tasks(config)
    run_dir = Path(config.run_dir)
    bare = load_questions(config.data)
    questions = prompted(config.data, bare)
    models = _models(config, teacher, students, progress)
    for model in models.values():
        model.model.eval()
    run_dir.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(run_dir / "config.yaml", dump_yaml(config))
    probes = config.probes
    with stage_display(progress, list(STAGES)) as display:
        stage_fns = {
            "traces": functools.partial(traces_stage, run_dir, models, questions, probes.traces.max_new_tokens,
                                        probes.traces.batch_size, functools.partial(display.say, "traces"),
                                        probes.traces.stop or ("\n" if config.data.few_shot else None),
                                        [q.prompt for q in bare] if config.data.prompt_template != "{question}"
                                        else None),
            "calibration": functools.partial(calibration_stage, run_dir, models, questions,
                                             probes.calibration.n_bins, probes.calibration.batch_size)
            if probes.calibration.enabled else None,
            "representations": functools.partial(representations_stage, run_dir, models, questions,
                                                 probes.representations.n, probes.representations.batch_size)
            if probes.representations.enabled else None,
        }
        forget_disabled(run_dir, [name for name, fn in stage_fns.items() if fn is None])
        for name, fn in stage_fns.items():
            with display.stage(name) as status:
                status["text"] = "off" if fn is None else cached_or_seconds(run_dir, name, fn)
    students = [name for name in models if name != TEACHER]
    data = {"task": "reasoning", "primary": config.data.split, "shifted": None,
            "tasks": [t for t in ("chains", "babi") if getattr(config.data, t) is not None],
            "splits": {config.data.split: len(questions)}, "has_masks": False, "has_counterfactuals": False,
            "classes": None, "prompt_template": config.data.prompt_template, "few_shot": config.data.few_shot}
    extra = {"models": {name: {"parameters": sum(p.numel() for p in m.model.parameters()),
                               "role": "teacher" if name == TEACHER else "student"} for name, m in models.items()},
             "probes": probes.model_dump(mode="json")}
    return build_lm_results(run_dir, students, data, config.selection, extra, samples=config.samples)

