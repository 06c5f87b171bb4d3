"""The language-model audit's stages, under ``<run_dir>/stages/``:

- ``generate-<model>``: each model's greedy trace for every question (``rows.jsonl``, one ``{"index", "text"}`` per
  question), one stage per model, so a killed run or an added student generates only what is missing. Sharded
  (``map`` over chunks of whole batches, at most ``GENERATION_CHUNK`` and enough for ``MIN_SHARDS`` chunks:
  :func:`kdlens.stages.batch_spans`): a kill loses at most the chunk being generated;
- ``traces``: the traces checked step by step by the task's checker: ``figures.json`` holds
  :func:`kdlens.probes.traces.trace_figures` per model (accuracy, trace accuracy, the trace x answer table with
  P(CA | CT), P(CA | IT) and the independence test, agreement, step agreement and BLEU against the teacher, all per
  task and per number of steps); ``rows.jsonl`` one row per (model, question) with each sentence marked. Not
  sharded: checking is cheap next to generating, which is;
- ``calibration``: the probability each model gives to the answer it wrote, its ECE and reliability curve
  (:func:`kdlens.probes.traces.calibration_summary`). Sharded: ``map`` over chunks of (at most)
  ``CALIBRATION_CHUNK`` batches of questions scores each model's answers (one scoring pass per batch of questions,
  over those with an answer) and checks them; ``reduce`` joins the confidences and computes the ECE and the curve
  over every question;
- ``representations``: linear CKA between the teacher's and each student's layers, hidden states averaged per word
  on each question followed by the teacher's trace (tokenizers may differ). Sharded: ``map`` over chunks of (at
  most) ``REPRESENTATIONS_CHUNK`` batches of texts pools each model's hidden states per word
  (:func:`kdlens.probes.lm_representations.word_states`); a shard's state is those pooled features, per model and
  layer (words in the shard x the layer's width, float64: words x total width x 8 bytes per model). ``reduce`` joins
  each model's words in shard order and computes the CKA once, over every word.

Every shard starts on a batch boundary and runs its work in the same batches as one process would, so the
figures are exactly the same however the shards are spread over processes and whatever the chunk size.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from kdlens import io
from kdlens.audit.common import TEACHER
from kdlens.probes import traces as T
from kdlens.probes.lm_representations import cka_figures, layer_names, word_states
from kdlens.rundir import RunDir, StageDir, StageOutput
from kdlens.stages import Shard, Stage, batch_spans
from kdlens.subjects.lm import LanguageModel
from kdlens.subjects.lm.compress import weights
from kdlens.tasks.free_text import QuestionExample

GENERATION_CHUNK = 4  # most batches of traces saved at a time (kdlens.stages.batch_spans)
CALIBRATION_CHUNK = 4  # most batches of questions scored per shard of the calibration stage
REPRESENTATIONS_CHUNK = 4  # most batches of texts pooled per shard of the representations stage
POOL_NOTE = ("Hidden states are averaged over each word's tokens (through character offsets), so models with "
             "different tokenizers give one row per word; the text is each question followed by the teacher's trace.")


def digest(model: LanguageModel) -> str:
    """The digest of a language model's weights (a quantised layer's by its int8 values and scales)."""
    return io.tensors_digest(weights(model.model))


def asked_digest(questions: list) -> str:
    """The digest of the questions as asked (prompts and gold answers): what a model's generations depend on."""
    return io.stable_hash([[q.prompt, q.answer] for q in questions])


def questions_digest(questions: list) -> str:
    """The digest of the questions as asked and checked (your questions' answer rules and solutions included)."""
    if not questions or not isinstance(questions[0], QuestionExample):
        return asked_digest(questions)
    return io.stable_hash([[q.prompt, q.answer, dataclasses.asdict(q.rule), q.solution, q.choices]
                           for q in questions])


def generation_stage(name: str, model: LanguageModel, questions: list, settings: dict) -> Stage:
    """Model ``name``'s greedy trace for every question (``settings``: ``max_new_tokens``, ``batch_size``, optional
    ``stop`` and ``stop_ids``), generated ``GENERATION_CHUNK`` batches at a time, each chunk saved as it is done."""
    inputs = {"model": digest(model), "questions": asked_digest(questions), "settings": settings}
    chunks = batch_spans(len(questions), settings["batch_size"], GENERATION_CHUNK)

    def map_chunk(chunk: Shard, stage_dir: StageDir) -> dict:
        stage_dir.say(f"{name}: {chunk.start}/{len(questions)} traces")
        return {"texts": T.generate_traces(model, questions[chunk.start:chunk.stop],
                                           max_new_tokens=settings["max_new_tokens"],
                                           batch_size=settings["batch_size"], stop=settings.get("stop"),
                                           stop_ids=settings.get("stop_ids", ()))}

    def reduce(states: list[dict], _) -> StageOutput:
        texts = [text for state in states for text in state["texts"]]
        return StageOutput(rows=[{"index": i, "text": text} for i, text in enumerate(texts)],
                           summary={"n": len(texts)})

    return Stage(f"generate-{name}", inputs, shards=chunks, map=map_chunk, reduce=reduce, examples=len(questions))


def generated(run: RunDir, name: str) -> list[str]:
    """Model ``name``'s traces, from its finished generation stage."""
    return [row["text"] for row in run.stage(f"generate-{name}").rows()]


def traces_stage(run: RunDir, models: dict[str, LanguageModel], questions: list, settings: dict,
                 shown: list[str] | None = None) -> Stage:
    """Every model's traces (from its generation stage), checked, with fidelity to the teacher's (see the module
    docstring); ``shown`` (one per question) is the question each row shows, when a prompt template wraps it.

    Returns
    -------
    Stage ``traces``; its summary: per model ``accuracy`` and ``trace_accuracy`` (students also ``step_agreement``).
    """
    inputs = {"stage": "traces", "models": {n: digest(m) for n, m in models.items()},
              "questions": questions_digest(questions), "settings": settings}

    def compute(_) -> StageOutput:
        texts = {name: generated(run, name) for name in models}
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
                    share = float(steps[i])
                    row["step_agreement"] = None if math.isnan(share) else share  # no gold step, no teacher text
                rows.append({"model": name, **row})
        summary = {name: {k: v for k, v in entry["overall"].items() if k in ("accuracy", "trace_accuracy",
                                                                              "step_agreement")}
                   for name, entry in figures["models"].items()}
        return StageOutput(figures=figures, rows=rows, summary=summary)

    return Stage("traces", inputs, compute=compute)


def traced_texts(run: RunDir) -> dict[str, list[str]]:
    """Each model's traces as the ``traces`` stage saw them (model -> one text per question)."""
    out: dict[str, list[str]] = {}
    for row in run.stage("traces").rows():
        out.setdefault(row["model"], []).append(row["text"])
    return out


def calibration_stage(run: RunDir, models: dict[str, LanguageModel], questions: dict[str, list], n_bins: int = 10,
                      batch_size: int = 16) -> Stage:
    """The probability each model gives to the answer it wrote (given its prompt and its trace), its ECE and
    reliability curve, from the ``traces`` stage's texts; ``questions``: per model, the questions as it was asked.

    Sharded over chunks of ``CALIBRATION_CHUNK`` batches of ``batch_size`` questions; each batch's answered questions
    are scored together, so the confidences do not depend on how the questions are chunked.

    Returns
    -------
    Stage ``calibration``; its summary: per model ``ece`` (None when no trace had an answer to score).
    """
    texts = traced_texts(run)
    count = len(questions[TEACHER])
    inputs = {"stage": "calibration", "models": {n: digest(m) for n, m in models.items()},
              "texts": io.stable_hash(texts), "n_bins": n_bins,
              **({"questions": {n: questions_digest(q) for n, q in questions.items()}}
                 if isinstance(questions[TEACHER][0], QuestionExample) else {})}

    def map_chunk(chunk: Shard, stage_dir: StageDir) -> dict:
        stage_dir.say(f"calibration: {chunk.start}/{count} questions")
        state = {}
        for name, model in models.items():
            asked, written = questions[name][chunk.start:chunk.stop], texts[name][chunk.start:chunk.stop]
            confidence = [T.answer_confidence(model, asked[lo:lo + batch_size], written[lo:lo + batch_size],
                                              batch_size=batch_size) for lo in range(0, len(asked), batch_size)]
            state[f"{name}.confidence"] = torch.cat(confidence)  # (chunk,) float64, NaN: no answer
            state[f"{name}.correct"] = torch.tensor([c.answer_correct for c in T.check_traces(asked, written)])
        return state

    def reduce(states: list[dict], _) -> StageOutput:
        figures: dict = {"n_bins": n_bins, "models": {}}
        rows = []
        for name in models:
            confidence = torch.cat([state[f"{name}.confidence"] for state in states])  # (n,) float64
            correct = torch.cat([state[f"{name}.correct"] for state in states])  # (n,) bool
            figures["models"][name] = T.calibration_summary(confidence, correct, n_bins)
            rows += [{"model": name, "index": i, "confidence": v, "correct": bool(correct[i])}
                     for i, v in enumerate(confidence.tolist())]
        return StageOutput(figures=figures, rows=rows,
                           summary={name: {"ece": entry["ece"]} for name, entry in figures["models"].items()})

    return Stage("calibration", inputs, shards=batch_spans(count, batch_size, CALIBRATION_CHUNK), map=map_chunk,
                 reduce=reduce, examples=count)


def representations_stage(run: RunDir, models: dict[str, LanguageModel], questions: list, n: int | None = None,
                          batch_size: int = 16) -> Stage:
    """Layer-by-layer linear CKA, teacher x each student, on the first ``n`` questions (their prompts: the same text
    for every model) followed by the teacher's traces (hidden states pooled per word).

    Sharded over chunks of ``REPRESENTATIONS_CHUNK`` batches of ``batch_size`` texts; a shard's state is every
    model's per-word features on its texts, ``"{model}.{layer index}"`` -> (words in the shard, width) float64, read
    in the batches one pass would read; ``reduce`` joins them in shard order and computes the CKA once, so the
    figures are exactly :func:`kdlens.probes.lm_representations.layer_cka`'s (an error when the texts hold fewer than
    2 words in all).

    Returns
    -------
    Stage ``representations``; its summary: per student ``cka_mean_best``.
    """
    teacher_texts = traced_texts(run)[TEACHER]
    keep = slice(0, n)
    texts = [q.prompt + t for q, t in zip(questions[keep], teacher_texts[keep], strict=True)]
    inputs = {"stage": "representations", "models": {k: digest(m) for k, m in models.items()},
              "texts": io.stable_hash(texts)}

    def map_chunk(chunk: Shard, stage_dir: StageDir) -> dict:
        stage_dir.say(f"representations: {chunk.start}/{len(texts)} texts")
        state = {}
        for name, model in models.items():
            feats = word_states(model, texts[chunk.start:chunk.stop], batch_size, start=chunk.start)
            state.update({f"{name}.{i}": f for i, f in enumerate(feats.values())})  # (words, d) float64
        return state

    def reduce(states: list[dict], _) -> StageOutput:
        layers = {name: layer_names(model, texts[0]) for name, model in models.items()}  # the states' labels
        feats = {name: {layer: torch.cat([state[f"{name}.{i}"] for state in states])  # (words, d) float64
                        for i, layer in enumerate(names)} for name, names in layers.items()}
        figures: dict = {"kernel": "linear", "debiased": False, "pool_note": POOL_NOTE, "n": len(texts),
                         "students": {name: cka_figures(feats[TEACHER], feats[name]) for name in models
                                      if name != TEACHER},
                         "teacher_layers": layers[TEACHER]}
        return StageOutput(figures=figures, summary={name: {"cka_mean_best": e["cka_mean_best"]}
                                                     for name, e in figures["students"].items()})

    return Stage("representations", inputs, shards=batch_spans(len(texts), batch_size, REPRESENTATIONS_CHUNK),
                 map=map_chunk, reduce=reduce, examples=len(texts))
