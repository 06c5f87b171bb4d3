"""Reasoning-trace probes: is a model's step-by-step answer right, are its steps right, and are they its teacher's?

A trace is checked by its task's own checker (:mod:`kdlens.tasks.chains`, :mod:`kdlens.tasks.babi`, and for your
questions :mod:`kdlens.tasks.free_text`), which never raises on model output. From the checks this module gives,
for one model:

- accuracy (answers) and trace accuracy (every gold step stated right, no wrong sentence), the latter over the
  traces a checker could judge (``n_trace_checked``; None when it could judge none: then the trace figures are
  fidelity only);
- the trace x answer contingency table, P(correct answer | correct trace), P(correct answer | wrong trace), and the
  chi-square / Fisher test of their independence (:func:`kdlens.measures.independence_test`), over the same traces;
- against a teacher's traces on the same questions: answer agreement, step agreement (both right on a gold step;
  for a question without gold steps, the share of the teacher's sentences the student also states) and corpus
  BLEU of the student's traces against the teacher's, the literature's text-overlap score;
- all of it by difficulty (the number of steps for chains) and, for your questions, by category;
- the calibration of the probability a model gives to the answer it wrote (:func:`answer_calibration`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from kdlens import measures as M
from kdlens.tasks import babi, chains, free_text
from kdlens.tasks.text import TraceCheck, normalize, strip_terminator
from kdlens.validation import fail

TASKS = {chains.ChainExample: ("chains", chains), babi.BabiExample: ("babi", babi),
         free_text.QuestionExample: ("questions", free_text)}


def task_name(example) -> str:
    """``"chains"``, ``"babi"`` or ``"questions"`` (yours): the task an example comes from."""
    entry = TASKS.get(type(example))
    if entry is None:
        fail("example", "a ChainExample, a BabiExample or a QuestionExample", type(example).__name__)
    return entry[0]


def check_traces(examples: Sequence, texts: Sequence[str]) -> list[TraceCheck]:
    """Each text checked by its example's task (texts are model outputs: anything goes, nothing raises)."""
    if len(examples) != len(texts):
        fail("examples` and `texts", "one text per example", f"{len(examples)} examples and {len(texts)} texts")
    if not examples:
        fail("examples", "at least one example", "none")
    for e in examples:
        task_name(e)  # an unknown example type is an error before any checking
    return [TASKS[type(e)][1].check_trace(e, t) for e, t in zip(examples, texts, strict=True)]


def generate_traces(model, examples: Sequence, max_new_tokens: int = 160, batch_size: int = 32,
                    stop: str | None = None, stop_ids: Sequence[int] = ()) -> list[str]:
    """Greedy traces of a :class:`~kdlens.subjects.LanguageModel` for each example's prompt (one per example), each
    cut before the first ``stop`` string when given, and ended by the model's eos or any of ``stop_ids``."""
    return model.generate([e.prompt for e in examples], max_new_tokens=max_new_tokens, batch_size=batch_size,
                          stop=stop, stop_ids=stop_ids)


def per_question_step_agreement(examples: Sequence, texts: Sequence[str], teacher_texts: Sequence[str]) -> torch.Tensor:
    """(n,) float64: per question, the share of its gold steps that both the student's trace (``texts``) and the
    teacher's get right (:func:`kdlens.measures.step_agreement`, correctness kind); for a question without gold
    steps, the share of the teacher's sentences the student's trace also states (normalised text); NaN when the
    question has no gold step and the teacher's trace no sentence."""
    student, teacher = check_traces(examples, list(texts)), check_traces(examples, list(teacher_texts))
    shares = _step_shares(teacher, student)
    return torch.tensor([math.nan if v is None else v for v in shares], dtype=torch.float64)


def _step_shares(teacher: list[TraceCheck], student: list[TraceCheck]) -> list[float | None]:
    gold = [i for i, t in enumerate(teacher) if t.steps_correct]
    shares: list[float | None] = [None] * len(teacher)
    if gold:
        by_gold = M.step_agreement([teacher[i].steps_correct for i in gold], [student[i].steps_correct for i in gold],
                                   kind="correctness", reduction="none")
        for i, share in zip(gold, by_gold.tolist(), strict=True):
            shares[i] = share
    for i, (t, s) in enumerate(zip(teacher, student, strict=True)):
        if not t.steps_correct and t.sentences:
            said = {_said(sentence) for sentence in s.sentences}
            shares[i] = sum(_said(sentence) in said for sentence in t.sentences) / len(t.sentences)
    return shares


def _said(sentence: str) -> str:
    return strip_terminator(normalize(sentence))


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _summary(checks: list[TraceCheck], teacher: list[TraceCheck] | None, texts: list[str],
             teacher_texts: list[str] | None) -> dict:
    answer = [c.answer_correct for c in checks]
    judged = [i for i, c in enumerate(checks) if c.trace_correct is not None]
    out = {"n": len(checks), "accuracy": sum(answer) / len(answer), "n_trace_checked": len(judged),
           "trace_accuracy": _mean([checks[i].trace_correct for i in judged]), "table": None, "independence": None}
    if judged:
        table = M.trace_answer_table([checks[i].trace_correct for i in judged], [answer[i] for i in judged])
        out.update(table=table.as_dict(), independence=M.independence_test(table).as_dict())
    if teacher is not None:
        agree = [s.answer is not None and s.answer == t.answer for s, t in zip(checks, teacher, strict=True)]
        out["answer_agreement"] = sum(agree) / len(agree)
        out["step_agreement"] = _mean(_step_shares(teacher, checks))
        out["bleu"] = M.bleu(texts, teacher_texts, smooth="floor")
    return out


def trace_figures(examples: Sequence, texts: Sequence[str], teacher_texts: Sequence[str] | None = None) -> dict:
    """Everything this module measures for one model's traces, overall, per task and per difficulty.

    Parameters
    ----------
    examples : n lab examples (chains and babi may be mixed)
    texts : n generated traces of the model under test, one per example
    teacher_texts : n traces of the teacher on the same examples (turns on agreement, step agreement, BLEU)

    Returns
    -------
    dict (JSON-ready): ``overall`` and ``tasks[name]`` each with ``n``, ``accuracy``, ``n_trace_checked``,
    ``trace_accuracy``, ``table`` (counts, P(CA | CT), P(CA | IT)), ``independence`` (chi-square, Fisher) (the
    last three None when no trace could be checked), and with a teacher ``answer_agreement``, ``step_agreement``,
    ``bleu``; ``tasks[name]["by_difficulty"]`` the same per difficulty (questions without one left out) and
    ``tasks[name]["by_category"]`` per category (only where the questions have categories).

    Examples
    --------
    >>> from kdlens.tasks import chains
    >>> examples = chains.make_split(chains.ChainsConfig(max_steps=3), "test", 20)
    >>> gold = [chains.write_trace(e, "teacher") for e in examples]
    >>> figures = trace_figures(examples, gold, teacher_texts=gold)
    >>> figures["overall"]["accuracy"], figures["overall"]["step_agreement"]
    (1.0, 1.0)
    """
    texts = list(texts)
    checks = check_traces(examples, texts)
    teacher = check_traces(examples, list(teacher_texts)) if teacher_texts is not None else None
    teacher_texts = list(teacher_texts) if teacher_texts is not None else None

    def part(indices: list[int]) -> dict:
        return _summary([checks[i] for i in indices], [teacher[i] for i in indices] if teacher else None,
                        [texts[i] for i in indices], [teacher_texts[i] for i in indices] if teacher else None)

    out: dict = {"overall": part(list(range(len(examples)))), "tasks": {}}
    names = [task_name(e) for e in examples]
    for name in dict.fromkeys(names):
        mine = [i for i, n in enumerate(names) if n == name]
        entry = part(mine)
        levels = sorted({examples[i].difficulty for i in mine} - {None})
        entry["by_difficulty"] = [{"difficulty": level, **part([i for i in mine if examples[i].difficulty == level])}
                                  for level in levels]
        categories = sorted({getattr(examples[i], "category", None) for i in mine} - {None})
        if categories:
            entry["by_category"] = [{"category": c, **part([i for i in mine if examples[i].category == c])}
                                    for c in categories]
        out["tasks"][name] = entry
    return out


def per_example(examples: Sequence, texts: Sequence[str]) -> list[dict]:
    """One JSON-ready row per example: task, difficulty, answer, correctness, and each sentence marked right,
    wrong or not a step (for the report's sample traces)."""
    rows = []
    for i, (e, c, text) in enumerate(zip(examples, check_traces(examples, list(texts)), texts, strict=True)):
        rows.append({"index": i, "task": task_name(e), "difficulty": e.difficulty,
                     **({"category": e.category} if getattr(e, "category", None) is not None else {}),
                     "prompt": e.prompt,
                     "gold": e.answer, "answer": c.answer, "answer_correct": c.answer_correct,
                     "trace_correct": c.trace_correct, "text": text,
                     "sentences": [{"text": s, "correct": ok} for s, ok in
                                   zip(c.sentences, c.sentence_correct, strict=True)]})
    return rows


def answer_confidence(model, examples: Sequence, texts: Sequence[str], batch_size: int = 16) -> torch.Tensor:
    """(n,) float64: the probability ``model`` (a :class:`~kdlens.subjects.LanguageModel`) gives to the answer
    written in each trace, given the prompt and the trace before the answer; NaN where no answer can be found.

    The answer is the one the task's checker parses from the trace (as written), located at its last occurrence
    in the text;
    its probability is the product of its tokens' probabilities (``exp`` of the summed log-probabilities).
    """
    texts = list(texts)
    checks = check_traces(examples, texts)
    contexts, answers, rows = [], [], []
    for i, (example, text, check) in enumerate(zip(examples, texts, checks, strict=True)):
        written = getattr(check, "answer_text", None) or check.answer
        start = text.rfind(written) if written else -1
        if start < 0:
            continue
        contexts.append(example.prompt + text[:start])
        answers.append(text[start:start + len(written)])
        rows.append(i)
    confidence = torch.full((len(texts),), math.nan, dtype=torch.float64)
    if rows:
        scores = model.score(contexts, answers, batch_size=batch_size)
        confidence[rows] = torch.tensor([math.exp(score.total) for score in scores], dtype=torch.float64)
    return confidence


def answer_calibration(model, examples: Sequence, texts: Sequence[str], n_bins: int = 10,
                       batch_size: int = 16) -> dict:
    """How well a model's probability of its own answer predicts that the answer is right.

    Returns
    -------
    dict (JSON-ready): ``n`` traces, ``n_scored`` (those with an answer to score), ``ece`` (equal-width bins,
    :func:`kdlens.measures.confidence_calibration_error`; None when nothing was scored), ``mean_confidence`` and
    ``accuracy`` over the scored traces, and the ``reliability`` curve (None when nothing was scored).
    """
    confidence = answer_confidence(model, examples, texts, batch_size)
    correct = torch.tensor([c.answer_correct for c in check_traces(examples, list(texts))])
    return calibration_summary(confidence, correct, n_bins)


def calibration_summary(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 10) -> dict:
    """:func:`answer_calibration`'s figures from each trace's ``confidence`` (n,) (NaN: no answer to score) and
    whether its answer is ``correct`` (n,) bool."""
    scored = ~torch.isnan(confidence)
    out = {"n": len(confidence), "n_scored": int(scored.sum()), "ece": None, "mean_confidence": None,
           "accuracy": None, "reliability": None}
    if out["n_scored"]:
        c, ok = confidence[scored], correct[scored]
        curve = M.confidence_reliability_curve(c, ok, n_bins)
        out.update(ece=M.confidence_calibration_error(c, ok, n_bins=n_bins), mean_confidence=float(c.mean()),
                   accuracy=float(ok.double().mean()),
                   reliability=curve.to_lists())
    return out

