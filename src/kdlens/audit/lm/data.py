"""The questions of a language-model audit: the lab's reasoning tasks, drawn as the config says, each prompt put
through the config's template."""

from __future__ import annotations

import dataclasses

from kdlens.audit.lm.config import ReasoningAuditData
from kdlens.probes import traces as T
from kdlens.tasks import babi, chains


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
