"""Your questions as audit examples: each :class:`~kdlens.tasks.questions.Question` with its prompt and the rule
that reads and checks a model's free-text answer (:class:`AnswerRule`), and :func:`check_trace`, which gives the
same :class:`~kdlens.tasks.text.TraceCheck` as the lab's checkers.

What a check can say depends on the question and the rule:

- the answer: extracted (after any ``<think>`` block) and compared as the rule says (:mod:`kdlens.tasks.answers`);
- the steps (``steps: arithmetic``): every equation the trace states is verified exactly, and with a worked
  solution, each of its intermediate results is a gold step, reached or not (:mod:`kdlens.tasks.arithmetic`);
  the trace is correct when every gold step is reached and no equation is wrong. Without a solution the trace is
  correct when it states at least one equation and none is wrong, and not checkable (None) when it states none;
- ``steps: none``: no trace is checkable (``trace_correct`` None); fidelity to the teacher is all a trace can show.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from kdlens.tasks import answers as A
from kdlens.tasks.questions import Question
from kdlens.tasks.text import TraceCheck, check_text, split_sentences

STEP_CHECKERS = ("arithmetic", "none")


@dataclass(frozen=True)
class AnswerRule:
    """How a model's text is read: ``extract`` / ``pattern`` pick the answer (:func:`~kdlens.tasks.answers.
    extract_answer`), ``compare`` / ``tolerance`` judge it, ``think`` are the reasoning block's markers (None: the
    model does not think in blocks), ``steps`` the checker of the trace's steps ("arithmetic" or "none")."""

    extract: str = "auto"
    pattern: str | None = None
    compare: str = "numeric"
    tolerance: float = 1e-6
    think: tuple[str, str] | None = A.THINK
    steps: Literal["arithmetic", "none"] = "arithmetic"

    def describe(self) -> str:
        """What trace correctness means under this rule, in a sentence for the report."""
        if self.steps == "none":
            return "no step checker applies: traces are compared with the teacher's only (agreement, BLEU)"
        return ("every equation a trace states is verified exactly; with a worked solution, every intermediate "
                "result of it must be reached too")


@dataclass(frozen=True)
class QuestionExample:
    """One of your questions as the models see it.

    Attributes
    ----------
    prompt : the text each model is given (template and few-shot examples applied)
    answer : the gold answer, as written in the file
    question : the question alone, as written in the file
    solution : the worked solution, or None
    difficulty, category, choices, line : from the file (:class:`~kdlens.tasks.questions.Question`)
    rule : how answers and steps are checked
    """

    prompt: str
    answer: str
    question: str
    solution: str | None = None
    difficulty: float | None = None
    category: str | None = None
    choices: tuple[str, ...] | None = None
    line: int = 0
    rule: AnswerRule = AnswerRule()


@dataclass
class AnswerCheck(TraceCheck):
    """A :class:`~kdlens.tasks.text.TraceCheck` of free text, with ``answer_text``: the answer as the text writes
    it (``answer`` is its canonical form), or None."""

    answer_text: str | None = None


def make_examples(questions: list[Question], rule: AnswerRule) -> list[QuestionExample]:
    """One :class:`QuestionExample` per question, its prompt the bare question (put it through a template later)."""
    return [QuestionExample(q.question, q.answer, q.question, q.trace, q.difficulty, q.category, q.choices, q.line,
                            rule) for q in questions]


def with_prompt(example: QuestionExample, prompt: str) -> QuestionExample:
    return dataclasses.replace(example, prompt=prompt)


def canonical(answer: str | None, rule: AnswerRule, gold: str = "") -> str | None:
    """An extracted answer in the form two models' answers are compared in: a number's value, normalised text (the
    gold's, under ``contains``, when the answer holds it: "mary is in the kitchen" and "kitchen" agree), a choice
    letter; None stays None."""
    if answer is None:
        return None
    if rule.compare == "contains":
        return A.normalize(gold) if A.answers_match(answer, gold, "contains") else A.normalize(answer)
    if rule.compare == "numeric":
        value = A.parse_number(answer)
        return None if value is None else f"{value:.12g}"
    if rule.compare == "normalized":
        return A.normalize(answer)
    if rule.compare == "choice":
        return answer.strip().upper()
    return answer.strip()


def check_trace(example: QuestionExample, text: str) -> AnswerCheck:
    """Check a model's text for ``example`` (never raises on model output).

    Returns
    -------
    :class:`AnswerCheck`: ``answer`` in :func:`canonical` form; ``steps_correct`` one bool per
    gold step (reached or not; empty without a solution or with ``steps: none``); ``trace_correct`` None when
    nothing in the trace can be checked; ``sentence_correct`` per sentence (True / False for a sentence whose
    equations are all right / one is wrong, None otherwise).
    """
    check_text(text)
    rule = example.rule
    found = A.extract_answer(text, rule.extract, rule.pattern, example.choices, think=rule.think)
    correct = A.answers_match(found, example.answer, rule.compare, rule.tolerance, example.choices)
    sentences, spans = split_sentences(text)
    if rule.steps == "arithmetic":
        from kdlens.tasks.arithmetic import check_arithmetic

        arithmetic = check_arithmetic(text, example.solution)
        steps, trace, marks = list(arithmetic.reached), arithmetic.trace_correct, list(arithmetic.sentence_correct)
    else:
        steps, trace, marks = [], None, [None] * len(sentences)
    return AnswerCheck(steps_correct=steps, trace_correct=trace, answer=canonical(found, rule, example.answer),
                      answer_correct=correct, sentences=sentences, spans=spans, sentence_correct=marks,
                      answer_text=found)


def shot(example: QuestionExample) -> str:
    """A solved example's answer as a model should write it: the solution (if any), then "The answer is X."."""
    solution = (example.solution or "").strip()
    return (solution + " " if solution else "") + f"The answer is {example.answer}."

