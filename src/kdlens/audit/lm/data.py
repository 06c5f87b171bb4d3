"""The questions of a language-model audit and the prompts each model is given.

The lab's reasoning tasks are drawn as the config says; your questions are read from their file. A prompt is the
config's template with the question (and few-shot examples) in, or with ``chat: true`` each model's own chat
template, so with chat the prompts differ per model.
"""

from __future__ import annotations

import dataclasses

from kdlens.audit.lm.config import AnswerSettings, QuestionsAuditData, ReasoningAuditData
from kdlens.probes import traces as T
from kdlens.subjects.lm import LanguageModel
from kdlens.subjects.lm.chat import chat_prompt, check_chat
from kdlens.subjects.sources import task_defaults
from kdlens.tasks import babi, chains
from kdlens.tasks import free_text as F
from kdlens.tasks import questions as Q
from kdlens.tasks.answers import LETTERS, parse_number
from kdlens.validation import fail


def lab_tasks(data, teacher):
    """``data`` with the lab's own task settings where ``teacher`` (a source) is a lab model and ``data`` leaves them
    unset (so an audit or a selection draws the tasks as the lab drew them); ``data`` itself otherwise."""
    if isinstance(data, QuestionsAuditData):
        return data
    defaults = task_defaults(teacher, "lm")
    update = {task: value for task, value in defaults.items() if task not in data.model_fields_set}
    return data.model_copy(update=update) if update else data


def load_questions(data: ReasoningAuditData | QuestionsAuditData) -> list:
    """The audit's questions, bare (prompts are the questions alone): the first ``data.n`` of ``data.split`` of each
    lab task given (chains first, then babi), or the first ``data.n`` rows of your file (after the few-shot rows
    when the examples come from the same file)."""
    if isinstance(data, QuestionsAuditData):
        held_out = data.few_shot if data.shots_path is None else 0
        n = None if data.n is None else data.n + held_out
        rows = Q.load_questions(data.path, data.format, data.fields, n)[held_out:]
        if not rows:
            fail(data.path, f"questions beyond the {held_out} used as few-shot examples", "none left",
                 "Give shots_path (a file of solved examples), or fewer few_shot.")
        return examples(rows, data.answer)
    out = []
    if data.chains is not None:
        out += chains.make_split(data.chains, data.split, data.n)
    if data.babi is not None:
        out += babi.make_split(data.babi, data.split, data.n)
    return out


def examples(rows: list[Q.Question], settings: AnswerSettings) -> list[F.QuestionExample]:
    """Each question with the answer rule ``settings`` resolve to for it (``auto`` decided per question)."""
    out = []
    for row in rows:
        numeric = parse_number(row.answer) is not None and row.choices is None
        compare = settings.compare
        if compare == "auto":
            compare = "choice" if row.choices else "numeric" if numeric else "contains"
        extract = settings.extract
        if extract == "auto" and (row.choices or not numeric):
            extract = "choice" if row.choices else "sentence"
        steps = settings.steps if settings.steps != "auto" else "arithmetic" if compare == "numeric" else "none"
        rule = F.AnswerRule(extract, settings.pattern, compare, settings.tolerance,
                            None if settings.think is None else tuple(settings.think), steps)
        out += F.make_examples([row], rule)
    return out


def shots(data: QuestionsAuditData) -> list[F.QuestionExample]:
    """The solved examples shown before each question: from ``shots_path``, else the file's first rows."""
    if data.few_shot == 0:
        return []
    rows = Q.load_questions(data.shots_path or data.path, data.format, data.fields, data.few_shot)
    if len(rows) < data.few_shot:
        fail("few_shot", f"at most the {len(rows)} solved examples in {data.shots_path or data.path}",
             str(data.few_shot))
    return examples(rows, data.answer)


def _filled(template: str, example: F.QuestionExample, examples: str = "") -> str:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(example.choices or ()))
    question = example.question
    if options and "{choices}" not in template:
        question += "\n" + options
    return template.format(question=question, choices=options, examples=examples)


def prompted(data: ReasoningAuditData | QuestionsAuditData, questions: list,
             models: dict[str, LanguageModel]) -> dict[str, list]:
    """Per model, ``questions`` with the prompt it is given (the same for every model unless ``chat: true``)."""
    if isinstance(data, ReasoningAuditData):
        same = _lab_prompted(data, questions)
        return {name: same for name in models}
    shown = shots(data)
    if not data.chat:
        block = "".join(f"{_filled(data.template, s)} {F.shot(s)}\n\n" for s in shown)
        same = [F.with_prompt(q, _filled(data.template, q, block)) for q in questions]
        return {name: same for name in models}
    for name, model in models.items():
        check_chat(model, name)
    return {name: [F.with_prompt(q, chat_prompt(model, _turns(data, shown, q))) for q in questions]
            for name, model in models.items()}


def _turns(data: QuestionsAuditData, shown: list[F.QuestionExample], question: F.QuestionExample) -> list[dict]:
    turns = [{"role": "system", "content": data.system_prompt}] if data.system_prompt else []
    for s in shown:
        turns += [{"role": "user", "content": _filled(data.template, s)}, {"role": "assistant", "content": F.shot(s)}]
    return turns + [{"role": "user", "content": _filled(data.template, question)}]


def _lab_prompted(data: ReasoningAuditData, questions: list) -> list:
    """``questions`` with each prompt put through ``data.prompt_template``, with ``data.few_shot`` solved train
    questions of its task (prompt, then the teacher-style trace, one per line) as ``{examples}``."""
    examples = {}
    for name, module, config in (("chains", chains, data.chains), ("babi", babi, data.babi)):
        shots = module.make_split(config, "train", data.few_shot) if config is not None and data.few_shot else []
        examples[name] = "".join(f"{e.prompt} {module.write_trace(e, 'teacher')}\n" for e in shots)
    return [dataclasses.replace(q, prompt=data.prompt_template.format(question=q.prompt,
                                                                      examples=examples[T.task_name(q)]))
            for q in questions]
