"""The language-model audit's provenance stages (:mod:`kdlens.probes.provenance`), run when the config names the
original student (``probes: {provenance: {original_student: NAME}}``); every other student is a distilled model D:

- ``provenance-scores``: each sentence of D's traces (from the ``traces`` stage, cut by
  :func:`~kdlens.probes.provenance.segment`) scored under the teacher T, the original student S and D, each given its
  own prompt for the question and D's trace before the sentence (one scoring pass per model per trace). Sharded over
  chunks of (at most) ``PROVENANCE_CHUNK`` batches of questions; ``rows.jsonl`` holds one row per (D, question):
  the spans and the three probabilities of every sentence, or why the trace was not scored (no sentence; longer
  than a model's context). Its inputs hold no threshold, so a new alpha or beta re-reads the scores;
- ``provenance``: the categories and every aggregate (shares with trajectory-bootstrap intervals overall, by third
  of the trace, by right or wrong final answer, by task and difficulty; mean probabilities per category; the
  teacher share's correlation with correctness; the alpha x beta sensitivity grid; and the paper's two findings as
  differences with intervals: teacher sentences early rather than late, in right answers rather than wrong ones).
"""

from __future__ import annotations

import math

import torch

from kdlens import io
from kdlens.audit.common import TEACHER
from kdlens.audit.lm.stages import digest, traced_texts
from kdlens.probes import provenance as P
from kdlens.rundir import RunDir, StageDir, StageOutput
from kdlens.stages import Shard, Stage, batch_spans
from kdlens.subjects.lm import LanguageModel

PROVENANCE_CHUNK = 4  # most batches of questions scored per shard
ROLES = ("teacher", "student", "distilled")


def roles(models: dict[str, LanguageModel], original: str) -> dict[str, dict[str, str]]:
    """Per distilled student, the model playing each role: ``{D: {"teacher": ..., "student": original,
    "distilled": D}}``, students in the audit's order."""
    return {name: {"teacher": TEACHER, "student": original, "distilled": name}
            for name in models if name not in (TEACHER, original)}


def scores_stage(run: RunDir, models: dict[str, LanguageModel], asked: dict[str, list], settings) -> Stage:
    """Every sentence of each distilled student's traces scored under T, S and D (see the module docstring);
    ``asked``: per model, the questions as it was asked; ``settings``: the config's ``ProvenanceProbe``.

    Returns
    -------
    Stage ``provenance-scores``; its summary: per distilled student the sentences scored.
    """
    cast = roles(models, settings.original_student)
    texts = traced_texts(run)
    count = min(settings.n or len(asked[TEACHER]), len(asked[TEACHER]))
    cut = settings.segmentation
    spans = {d: [P.segment(texts[d][i], cut.terminators, cut.think) for i in range(count)] for d in cast}
    inputs = {"stage": "provenance-scores", "models": {n: digest(m) for n, m in models.items()
                                                       if n in {TEACHER, settings.original_student, *cast}},
              "texts": io.stable_hash({d: texts[d][:count] for d in cast}),
              "prompts": io.stable_hash({n: [q.prompt for q in asked[n][:count]] for n in asked}),
              "per": settings.per, "segmentation": cut.model_dump(mode="json")}

    def map_chunk(chunk: Shard, stage_dir: StageDir) -> dict:
        stage_dir.say(f"scoring sentences: {chunk.start}/{count} traces")
        state = {}
        for d, playing in cast.items():
            mine = range(chunk.start, chunk.stop)
            scored = torch.tensor([bool(spans[d][i]) for i in mine])  # (chunk,) bool
            for role in ROLES:
                model = models[playing[role]]
                prompts = [asked[playing[role]][i].prompt for i in mine]
                scored &= torch.tensor(P.fits(model, prompts, [texts[d][i] for i in mine]))
            state[f"{d}.scored"] = scored
            kept = [i for i, keep in zip(mine, scored.tolist(), strict=True) if keep]
            for role in ROLES:
                name = playing[role]
                found = P.sentence_probabilities(models[name], [asked[name][i].prompt for i in kept],
                                                 [texts[d][i] for i in kept], [spans[d][i] for i in kept],
                                                 per=settings.per, batch_size=settings.batch_size) if kept else []
                state[f"{d}.{role}"] = torch.cat(found) if found else torch.zeros(0, dtype=torch.float64)
        return state

    def reduce(states: list[dict], _) -> StageOutput:
        rows, summary = [], {}
        for d in cast:
            scored = torch.cat([s[f"{d}.scored"] for s in states]).tolist()  # (count,)
            flat = {role: torch.cat([s[f"{d}.{role}"] for s in states]).tolist() for role in ROLES}
            at = 0
            for i, keep in enumerate(scored):
                row = {"model": d, "index": i, "spans": [list(s) for s in spans[d][i]]}
                if keep:
                    size = len(spans[d][i])
                    row.update({f"p_{role}": flat[role][at:at + size] for role in ROLES}, scored=True)
                    at += size
                else:
                    row.update(scored=False, why="no sentence" if not spans[d][i] else
                               "longer than a model's context")
                rows.append(row)
            summary[d] = {"sentences": at}
        return StageOutput(rows=rows, summary=summary)

    return Stage("provenance-scores", inputs, shards=batch_spans(count, settings.batch_size, PROVENANCE_CHUNK),
                 map=map_chunk, reduce=reduce, examples=count)


def _probabilities(row: dict, role: str) -> torch.Tensor:
    return torch.tensor([math.nan if p is None else p for p in row[f"p_{role}"]], dtype=torch.float64)


def shares_stage(run: RunDir, settings, upstream: dict[str, str | None]) -> Stage:
    """The categories of the scored sentences and every aggregate (see the module docstring), from the
    ``provenance-scores`` and ``traces`` stages (``upstream``: their inputs' hashes, what this stage depends on).

    Returns
    -------
    Stage ``provenance``; ``figures.json``: the settings and, per distilled student, its aggregates; ``rows.jsonl``:
    per (distilled student, question) each sentence's text, span, probabilities and category. Its summary: per
    distilled student the teacher share.
    """
    thresholds = {"alpha": settings.alpha, "beta": settings.beta, "alphas": settings.alphas, "betas": settings.betas,
                  "n_resamples": settings.n_resamples}
    inputs = {"stage": "provenance", "upstream": upstream, **thresholds}

    def compute(_) -> StageOutput:
        traces = {(r["model"], r["index"]): r for r in run.stage("traces").rows()}
        scores = run.stage("provenance-scores").rows()
        bootstrap = {"n_resamples": settings.n_resamples}
        figures: dict = {"original_student": settings.original_student, "per": settings.per,
                         "categories": list(P.CATEGORIES),
                         "segmentation": settings.segmentation.model_dump(mode="json"), **thresholds, "students": {}}
        rows, summary = [], {}
        for d in dict.fromkeys(r["model"] for r in scores):
            theirs = [r for r in scores if r["model"] == d]
            mine = [r for r in theirs if r["scored"]]
            p = {role: [_probabilities(r, role) for r in mine] for role in ROLES}
            categories = [P.categorize(*(p[role][j] for role in ROLES), settings.alpha, settings.beta)
                          for j in range(len(mine))]
            trace = [traces[(d, r["index"])] for r in mine]
            correct = [bool(t["answer_correct"]) for t in trace]
            places = [P.thirds(len(c)) for c in categories]
            right = [[ok] * len(c) for ok, c in zip(correct, categories, strict=True)]
            figures["students"][d] = {
                "n_questions": len(theirs), "n_scored": len(mine), "not_scored": _not_scored(theirs),
                "overall": P.category_shares(categories, **bootstrap),
                "by_position": P.position_shares(categories, **bootstrap),
                "by_correctness": P.grouped_shares(categories, ["right" if ok else "wrong" for ok in correct],
                                                   **bootstrap),
                "by_task": P.grouped_shares(categories, [t["task"] for t in trace], **bootstrap),
                "by_difficulty": P.grouped_shares(categories, [t["difficulty"] for t in trace], **bootstrap),
                "mean_probabilities": P.mean_probabilities(categories, p),
                "teacher_share_correlation": P.teacher_share_correlation(categories, correct),
                "early_vs_late": P.share_difference(categories, [[w == "first" for w in x] for x in places],
                                                    [[w == "last" for w in x] for x in places], **bootstrap),
                "right_vs_wrong": P.share_difference(categories, right, [[not ok for ok in x] for x in right],
                                                     **bootstrap),
                "sensitivity": P.sensitivity(p, settings.alphas, settings.betas)}
            for r, t, found in zip(mine, trace, categories, strict=True):
                rows.append({"model": d, "index": r["index"], "task": t["task"], "difficulty": t["difficulty"],
                             "answer_correct": t["answer_correct"], "sentences": [
                                 {"text": t["text"][a:b], "span": [a, b], "category": c,
                                  **{f"p_{role}": r[f"p_{role}"][k] for role in ROLES}}
                                 for k, ((a, b), c) in enumerate(zip(r["spans"], found, strict=True))]})
            summary[d] = {"teacher_share": figures["students"][d]["overall"]["teacher"]["share"]}
        return StageOutput(figures=figures, rows=rows, summary=summary)

    return Stage("provenance", inputs, compute=compute)


def _not_scored(rows: list[dict]) -> dict[str, int]:
    """How many traces were not scored, by why."""
    out: dict[str, int] = {}
    for r in rows:
        if not r["scored"]:
            out[r["why"]] = out.get(r["why"], 0) + 1
    return out
