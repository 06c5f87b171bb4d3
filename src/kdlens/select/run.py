"""``kdlens select CONFIG``: teacher-guided selection of distillation data (Liu et al. 2025) and its baselines.

Stages, under ``<run_dir>/stages/``, each cached (a killed run resumes; a new method or beta re-reads the samples):

- ``samples``: k responses per problem sampled from the teacher (``temperature``, ``top_p``, seeded per problem
  chunk and draw, so the same config gives the same responses however the run is sharded); sharded over chunks of
  whole batches of problems;
- ``scores``: each response cut into sentences (:func:`kdlens.probes.provenance.segment`) and each sentence scored
  under the teacher and the original student S (one scoring pass per model per response), its length in S's tokens
  and its IFD under S: S's mean token loss on the response given the question over its mean loss on the response
  alone (after S's start-of-text token, or its end-of-text token where it has no start token); sharded like
  ``samples``;
- ``selection``: the sentences classified at ``beta`` (:func:`kdlens.select.choose.classify`), one response per
  problem chosen by each method, and per method ``<method>.jsonl`` and a ``datasets`` folder ``<method>/`` (load it
  with ``datasets.load_from_disk``) in the stage's folder, every row with every score.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from kdlens import io
from kdlens.audit.lm.data import lab_tasks, load_questions, prompted
from kdlens.audit.lm.stages import digest
from kdlens.config import dump_yaml, read_config_file, validate
from kdlens.probes import provenance as P
from kdlens.rundir import RunDir, StageDir, StageOutput
from kdlens.select.choose import CLASSES, ResponseScore, choose, classify, usable
from kdlens.select.config import SelectConfig
from kdlens.stages import Shard, Stage, StageRunner, batch_spans
from kdlens.subjects.lm import LanguageModel
from kdlens.subjects.sources import load_models
from kdlens.validation import fail

CHUNK = 4  # most batches of problems per shard
ROLES = ("teacher", "student")


def as_select_config(config: Any) -> SelectConfig:
    """``config`` as a :class:`SelectConfig` (itself, a dict of its fields, or a YAML file's path)."""
    if isinstance(config, SelectConfig):
        return config
    if isinstance(config, dict):
        return validate(config, SelectConfig)
    return validate(read_config_file(config), SelectConfig, source=str(config))


def start_of_text(model: LanguageModel) -> str:
    """The context a response is scored "alone" after: nothing where the tokenizer adds a start token itself, else
    its start-of-text token's text, else its end-of-text token's (which then also starts a text); an error without
    any."""
    if model.tokenizer("", add_special_tokens=True)["input_ids"]:
        return ""
    for token in (model.tokenizer.bos_token, model.tokenizer.eos_token):
        if token:
            return token
    fail("the original student's tokenizer", "a start- or end-of-text token (IFD scores a response alone after it)",
         "neither", "Set tokenizer.bos_token, or leave ifd out of methods.")


def samples_stage(teacher: LanguageModel, questions: list, config: SelectConfig) -> Stage:
    """``config.k`` sampled teacher responses per problem (``rows``: one ``{"index", "texts"}`` per problem)."""
    settings = {"k": config.k, "temperature": config.temperature, "top_p": config.top_p, "seed": config.seed,
                "max_new_tokens": config.max_new_tokens, "stop": config.stop, "batch_size": config.batch_size}
    inputs = {"stage": "samples", "teacher": digest(teacher),
              "prompts": io.stable_hash([q.prompt for q in questions]), **settings}

    def map_chunk(chunk: Shard, stage_dir: StageDir) -> dict:
        stage_dir.say(f"sampling: {chunk.start}/{len(questions)} problems")
        prompts = [q.prompt for q in questions[chunk.start:chunk.stop]]
        draws = [teacher.generate(prompts, max_new_tokens=config.max_new_tokens, do_sample=True,
                                  temperature=config.temperature, top_p=config.top_p,
                                  seed=config.seed + 1_000_003 * j + chunk.start, batch_size=config.batch_size,
                                  stop=config.stop) for j in range(config.k)]  # k lists of (chunk,) texts
        return {"texts": [[draw[i] for draw in draws] for i in range(len(prompts))]}

    def reduce(states: list[dict], _) -> StageOutput:
        texts = [row for state in states for row in state["texts"]]
        return StageOutput(rows=[{"index": i, "texts": row} for i, row in enumerate(texts)],
                           summary={"n": len(texts), "k": config.k})

    return Stage("samples", inputs, shards=batch_spans(len(questions), config.batch_size, CHUNK), map=map_chunk,
                 reduce=reduce, examples=len(questions))


def scores_stage(run: RunDir, models: dict[str, LanguageModel], asked: dict[str, list], config: SelectConfig,
                 samples: str) -> Stage:
    """Every sampled response's sentences scored under T and S, its length in S's tokens and its IFD under S
    (``rows``: per problem, per response ``{"spans", "p_teacher", "p_student", "tokens", "ifd"}``); ``samples``:
    the ``samples`` stage's inputs hash."""
    texts = [row["texts"] for row in run.stage("samples").rows()]
    cut = config.segmentation
    spans = [[P.segment(t, cut.terminators, cut.think) for t in row] for row in texts]
    inputs = {"stage": "scores", "samples": samples,
              "models": {n: digest(m) for n, m in models.items()},
              "prompts": io.stable_hash({n: [q.prompt for q in asked[n]] for n in ROLES}), "per": config.per,
              "segmentation": cut.model_dump(mode="json")}
    student = models["student"]
    alone = start_of_text(student) if "ifd" in config.methods else None

    def map_chunk(chunk: Shard, stage_dir: StageDir) -> dict:
        stage_dir.say(f"scoring: {chunk.start}/{len(texts)} problems")
        pairs = [(i, j) for i in range(chunk.start, chunk.stop) for j in range(len(texts[i])) if spans[i][j]]
        responses = [texts[i][j] for i, j in pairs]
        fit = [P.fits(models[r], [asked[r][i].prompt for i, _ in pairs], responses) for r in ROLES]
        fitting = [pair for pair, *ok in zip(pairs, *fit, strict=True) if all(ok)]
        responses, sentences = [texts[i][j] for i, j in fitting], [spans[i][j] for i, j in fitting]
        out: dict = {"pairs": [list(p) for p in fitting]}
        scores = {role: models[role].score([asked[role][i].prompt for i, _ in fitting], responses,
                                           batch_size=config.batch_size) if fitting else [] for role in ROLES}
        for role in ROLES:
            out[f"p_{role}"] = [p.tolist() for p in P.probabilities_of(scores[role], responses, sentences,
                                                                       config.per)]
        out["tokens"] = [len(score.token_logprobs) for score in scores["student"]]  # S's tokens of the response
        if alone is not None and fitting:
            bare = student.score([alone] * len(fitting), responses, batch_size=config.batch_size)
            out["ifd"] = [g.mean / b.mean if b.mean < 0 else None  # losses -mean: their ratio is the means'
                          for g, b in zip(scores["student"], bare, strict=True)]
        else:
            out["ifd"] = [None] * len(fitting)  # a JSON part: None, not NaN
        return out

    def reduce(states: list[dict], _) -> StageOutput:
        found: dict[tuple[int, int], dict] = {}
        for state in states:
            for k, (i, j) in enumerate(state["pairs"]):
                found[(i, j)] = {"p_teacher": state["p_teacher"][k], "p_student": state["p_student"][k],
                                 "tokens": state["tokens"][k], "ifd": state["ifd"][k]}
        rows = []
        for i, row in enumerate(texts):
            responses = []
            for j in range(len(row)):
                entry = found.get((i, j))
                responses.append({"spans": [list(s) for s in spans[i][j]], "scored": entry is not None,
                                  **(entry or {"why": "no sentence" if not spans[i][j] else
                                              "longer than a model's context"})})
            rows.append({"index": i, "responses": responses})
        return StageOutput(rows=rows, summary={"responses": len(found)})

    return Stage("scores", inputs, shards=batch_spans(len(texts), config.batch_size, CHUNK), map=map_chunk,
                 reduce=reduce, examples=len(texts))


def response_scores(row: dict, beta: float) -> tuple[list[ResponseScore], list[list[str | None]]]:
    """A problem's responses as :class:`ResponseScore` s (an unscored response counts no sentence) and each
    response's sentence classes."""
    scores, classes = [], []
    for response in row["responses"]:
        if not response["scored"]:
            scores.append(ResponseScore(0, 0, 0, 0, 0, math.nan))
            classes.append([])
            continue
        found = classify(*([math.nan if p is None else p for p in response[f"p_{role}"]] for role in ROLES), beta)
        counts = {c: found.count(c) for c in CLASSES}
        ifd = math.nan if response["ifd"] is None else response["ifd"]
        scores.append(ResponseScore(len(found), counts["teacher"], counts["student"], counts["common"],
                                    response["tokens"], ifd))
        classes.append(found)
    return scores, classes


def selection_stage(run: RunDir, bare: list, asked: dict[str, list], config: SelectConfig, scores: str) -> Stage:
    """One response per usable problem for every method, written as JSONL and a ``datasets`` folder each; the
    figures: ``distinct``, the mean number of different responses among a problem's k (at 1 every method keeps the
    same text), and per method the examples, tokens (S's), mean teacher sentences and share, mean IFD. ``scores``:
    the ``scores`` stage's inputs hash."""
    inputs = {"stage": "selection", "scores": scores, "beta": config.beta,
              "methods": config.methods, "seed": config.seed}

    def compute(stage_dir: StageDir) -> StageOutput:
        texts = [row["texts"] for row in run.stage("samples").rows()]
        scored = [response_scores(row, config.beta) for row in run.stage("scores").rows()]
        problems = [s for s, _ in scored]
        keep = usable(problems)
        figures: dict = {"n_problems": len(problems), "n_usable": sum(keep), "k": config.k, "beta": config.beta,
                         "distinct": sum(len(set(row)) for row in texts) / max(len(texts), 1), "methods": {}}
        for method in config.methods:
            picked = choose(method, problems, seed=config.seed)
            rows = []
            for i, j in enumerate(picked):
                if j is None:
                    continue
                s = problems[i][j]
                rows.append({"index": i, "question": bare[i].prompt, "prompt": asked["teacher"][i].prompt,
                             "response": texts[i][j], "answer": bare[i].answer, "sample": j,
                             "n_sentences": s.n_sentences, "teacher": s.teacher, "student": s.student,
                             "common": s.common, "teacher_share": s.teacher_share, "tokens": s.tokens,
                             "ifd": s.ifd, "classes": scored[i][1][j]})
            write_selection(stage_dir.path, method, rows)
            figures["methods"][method] = summarise(rows)
        return StageOutput(figures=figures, summary={m: {"tokens": e["tokens"]} for m, e in
                                                     figures["methods"].items()})

    return Stage("selection", inputs, compute=compute)


def summarise(rows: list[dict]) -> dict:
    """A selection's totals: examples, tokens, and the mean teacher sentences, teacher share and IFD per example."""
    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None and not math.isnan(r[key])]
        return sum(values) / len(values) if values else None

    return {"examples": len(rows), "tokens": sum(r["tokens"] for r in rows), "teacher_sentences": mean("teacher"),
            "teacher_share": mean("teacher_share"), "ifd": mean("ifd"), "sentences": mean("n_sentences")}


def write_selection(folder: Path, method: str, rows: list[dict]) -> None:
    """``<method>.jsonl`` and the ``datasets`` folder ``<method>/``, each written whole or not at all."""
    import datasets

    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    io.atomic_write_text(folder / f"{method}.jsonl", "".join(json.dumps(r) + "\n" for r in clean))
    staging = folder / f".{method}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # a bar per file written would break the stage display
    try:
        datasets.Dataset.from_list(clean).save_to_disk(str(staging))
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    target = folder / method
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def select(config: Any, progress: bool = True) -> dict:
    """Sample, score and select as ``config`` (a :class:`SelectConfig`, a dict of its fields, or a YAML path) says.

    Returns
    -------
    dict: the ``selection`` stage's figures (per method: examples, tokens, mean teacher sentences and share, IFD),
    with ``folder``, where each method's JSONL file and ``datasets`` folder are.
    """
    config = as_select_config(config)
    run = RunDir(config.run_dir)
    run.claim()
    data = lab_tasks(config.data, config.teacher)
    config = config.model_copy(update={"data": data})
    bare = load_questions(data)
    models = load_models({"teacher": config.teacher, "student": config.student}, "lm", config.device, progress)
    for model in models.values():
        model.model.eval()
    asked = prompted(data, bare, models)
    run.write_config(dump_yaml(config))
    with StageRunner(run, ["samples", "scores", "selection"], progress) as runner:
        runner.run(samples_stage(models["teacher"], asked["teacher"], config), line="samples")
        runner.run(scores_stage(run, models, asked, config, runner.inputs_hash("samples")), line="scores")
        runner.run(selection_stage(run, bare, asked, config, runner.inputs_hash("scores")), line="selection")
    return {**run.stage("selection").figures(), "folder": str(run.stage("selection").path)}
