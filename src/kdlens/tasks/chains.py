"""The chains task: multi-step arithmetic whose every intermediate value can be checked.

A prompt defines a start value and a chain of variables, each computed from the one before::

    a = 3 ; b = a + 4 ; c = b * 2 ; c ?

The **difficulty** is the number of computed steps (1 to 8 by default); the gold ``steps`` are their values in
canonical form (``"b = 7"``, ``"c = 14"``). Operands are drawn so that every value stays in ``0..max_value``: the
arithmetic is exact (no modulo) and each number is one token of a small closed vocabulary.

A trace states each step as a sentence, then the answer, in one of two styles that a probe can tell apart:

=========  ======================================================================================
teacher    ``a is 3 . b is a plus 4 , so b is 7 . c is b times 2 , so c is 14 . The answer is 14 .``
student    ``a = 3 ; b = 7 ; c = 14 ; answer 14``
=========  ======================================================================================

:func:`check_trace` reads either style (or anything a model writes) and says which steps, which sentences and
whether the answer are right. Splits ``train``, ``validation`` and ``test`` come from independent seeded streams,
1,024 examples each, so the first ``k`` examples of a split do not depend on how many are asked for.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from kdlens.config import StrictModel
from kdlens.tasks.text import (
    SPLITS,
    TraceCheck,
    answer_in,
    check_example,
    check_style,
    check_text,
    draw_split,
    normalize,
    parse_answer,
    split_sentences,
    strip_terminator,
)

__all__ = ["OPERATIONS", "SPLITS", "ChainExample", "ChainsConfig", "TraceCheck", "check_trace", "make_split",
           "parse_answer", "write_trace"]

OPERATIONS = ("+", "-", "*")
WORDS = {"+": "plus", "-": "minus", "*": "times"}
NAMES = string.ascii_lowercase  # the start value is `a`, step i defines NAMES[i]
_CLAIM = re.compile(r"(?:^| )([a-z]) (?:is|=) (\d+)$")  # the value a sentence ends by stating: "... b is 7"


class ChainsConfig(StrictModel):
    """How chains are drawn. The number of steps is uniform in ``[min_steps, max_steps]``; each step applies one of
    ``operations`` (uniformly among those that keep the value in ``0..max_value``) with an operand drawn uniformly
    from ``operand_range`` (``+``, ``-``) or ``multiplier_range`` (``*``)."""

    min_steps: int = Field(1, ge=1, le=len(NAMES) - 1)
    max_steps: int = Field(8, ge=1, le=len(NAMES) - 1)
    start_range: tuple[int, int] = (0, 20)
    operand_range: tuple[int, int] = (1, 20)
    multiplier_range: tuple[int, int] = (2, 5)
    max_value: int = Field(99, ge=1, le=999, description="every value and operand is a number in 0..max_value")
    operations: tuple[Literal["+", "-", "*"], ...] = OPERATIONS
    seed: int = 0

    @model_validator(mode="after")
    def _ranges(self):
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps must be at most max_steps, got {self.min_steps} > {self.max_steps}")
        for name in ("start_range", "operand_range", "multiplier_range"):
            low, high = getattr(self, name)
            if not 0 <= low <= high <= self.max_value:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high <= max_value ({self.max_value}), "
                                 f"got {(low, high)}")
        if not self.operations or len(set(self.operations)) != len(self.operations):
            raise ValueError(f"operations must be distinct and not empty, got {self.operations}")
        stuck = [v for v in range(self.max_value + 1) if not _choices(self, v)]
        if stuck:
            raise ValueError(f"no operation in {self.operations} keeps the value {stuck[0]} within 0..{self.max_value} "
                             f"with these operand ranges; add '+' and '-' to operations or lower the operand ranges")
        return self


@dataclass(frozen=True)
class ChainExample:
    """One chain. ``variables[i]`` holds ``values[i]``; step ``i`` (1-based) is
    ``variables[i] = variables[i-1] operations[i-1] operands[i-1]``.

    Attributes
    ----------
    prompt : the question as the model sees it, e.g. ``"a = 3 ; b = a + 4 ; b ?"``
    answer : the last value, as a string
    steps : the gold value of each computed variable, canonical ``"b = 7"``; ``len(steps) == difficulty``
    difficulty : number of computed steps
    variables, values : the start variable ``a`` and each computed one, with their values (difficulty + 1 each)
    operations, operands : the operator (``+ - *``) and right operand of each step (difficulty each)
    """

    prompt: str
    answer: str
    steps: tuple[str, ...]
    difficulty: int
    variables: tuple[str, ...]
    values: tuple[int, ...]
    operations: tuple[str, ...]
    operands: tuple[int, ...]


def _choices(config: ChainsConfig, value: int) -> list[tuple[str, int, int]]:
    """(operation, lowest operand, highest operand) for each operation that can follow ``value``."""
    top = config.max_value
    low, high = config.operand_range
    bounds = {"+": (low, min(high, top - value)), "-": (low, min(high, value))}
    low, high = config.multiplier_range
    bounds["*"] = (low, high if value == 0 else min(high, top // value))
    return [(op, *bounds[op]) for op in config.operations if bounds[op][0] <= bounds[op][1]]


def _apply(op: str, x: int, y: int) -> int:
    return x + y if op == "+" else x - y if op == "-" else x * y


def _draw(config: ChainsConfig, rng: random.Random) -> ChainExample:
    n_steps = rng.randint(config.min_steps, config.max_steps)
    values, ops, operands = [rng.randint(*config.start_range)], [], []
    for _ in range(n_steps):
        op, low, high = rng.choice(_choices(config, values[-1]))
        operand = rng.randint(low, high)
        values.append(_apply(op, values[-1], operand))
        ops.append(op)
        operands.append(operand)
    names = NAMES[: n_steps + 1]
    equations = [f"a = {values[0]}"] + [f"{names[i + 1]} = {names[i]} {ops[i]} {operands[i]}" for i in range(n_steps)]
    return ChainExample(prompt=" ; ".join(equations) + f" ; {names[-1]} ?", answer=str(values[-1]),
                        steps=tuple(f"{names[i]} = {values[i]}" for i in range(1, n_steps + 1)), difficulty=n_steps,
                        variables=tuple(names), values=tuple(values), operations=tuple(ops), operands=tuple(operands))


def make_split(config: ChainsConfig | None = None, split: str = "train", n: int = 1000) -> list[ChainExample]:
    """Draw ``n`` chains of ``split``, deterministically from ``config.seed``.

    Parameters
    ----------
    config : ChainsConfig (defaults: 1 to 8 steps, values in 0..99, operations ``+ - *``)
    split : "train" | "validation" | "test", each an independent seeded stream
    n : number of examples; the first ``k`` are the same whatever ``n`` is

    Returns
    -------
    list of ``n`` :class:`ChainExample`

    Examples
    --------
    >>> example = make_split(ChainsConfig(min_steps=2, max_steps=2), "test", 5)[0]
    >>> example.prompt, example.answer, example.steps
    ('a = 8 ; b = a + 9 ; c = b * 3 ; c ?', '51', ('b = 17', 'c = 51'))
    """
    config = config or ChainsConfig()
    return draw_split("chains", lambda rng: _draw(config, rng), config.seed, split, n)


def write_trace(example: ChainExample, style: str = "teacher") -> str:
    """The gold trace of ``example``: each value stated in order, then the answer.

    Parameters
    ----------
    example : ChainExample
    style : "teacher" (full sentences ending in ``.``, saying how each value is computed) or "student" (terse
        ``name = value`` items separated by ``;``); both end with the answer sentence

    Returns
    -------
    str of space-separated words, numbers and punctuation tokens

    Examples
    --------
    >>> example = make_split(ChainsConfig(min_steps=2, max_steps=2), "test", 1)[0]
    >>> write_trace(example)
    'a is 8 . b is a plus 9 , so b is 17 . c is b times 3 , so c is 51 . The answer is 51 .'
    >>> write_trace(example, "student")
    'a = 8 ; b = 17 ; c = 51 ; answer 51'
    """
    check_example(example, ChainExample)
    names, values = example.variables, example.values
    if check_style(style) == "student":
        items = [f"{name} = {value}" for name, value in zip(names, values, strict=True)]
        return " ; ".join([*items, f"answer {example.answer}"])
    sentences = [f"a is {values[0]} ."]
    for i, (op, operand) in enumerate(zip(example.operations, example.operands, strict=True)):
        sentences.append(f"{names[i + 1]} is {names[i]} {WORDS[op]} {operand} , so {names[i + 1]} is {values[i + 1]} .")
    return " ".join(sentences) + f" The answer is {example.answer} ."


def check_trace(example: ChainExample, text: str) -> TraceCheck:
    """Check a trace of either style (or any model output) against ``example``; never raises on a string.

    A sentence *states* a value when it ends with ``<name> is <number>`` or ``<name> = <number>``. Such a sentence
    is correct when the number is that variable's value (a variable the chain does not define is wrong); an answer
    sentence and any other sentence count as None. A gold step is correct when its variable is stated, and stated
    right every time.

    Parameters
    ----------
    example : ChainExample
    text : the generated trace

    Returns
    -------
    TraceCheck with ``len(steps_correct) == example.difficulty``

    Examples
    --------
    >>> example = make_split(ChainsConfig(min_steps=2, max_steps=2), "test", 1)[0]
    >>> check = check_trace(example, "a = 8 ; b = 17 ; c = 50 ; answer 51")
    >>> check.steps_correct, check.trace_correct, check.answer_correct, check.sentence_correct
    ([True, False], False, True, [True, True, False, None])
    """
    check_example(example, ChainExample)
    sentences, spans = split_sentences(check_text(text))
    truth = {str(name): str(value) for name, value in zip(example.variables, example.values, strict=True)}
    stated: dict[str, list[bool]] = {}
    sentence_correct: list[bool | None] = []
    answer = None
    for sentence in sentences:
        words = normalize(sentence)
        given = answer_in(words)
        claim = None if given is not None else _CLAIM.search(strip_terminator(words))
        answer = given or answer
        if claim is None:
            sentence_correct.append(None)
            continue
        name, number = claim.groups()
        right = truth.get(name) == (number.lstrip("0") or "0")
        stated.setdefault(name, []).append(right)
        sentence_correct.append(right)
    steps_correct = [bool(stated.get(name)) and all(stated[name]) for name in example.variables[1:]]
    return TraceCheck(steps_correct=steps_correct, trace_correct=all(steps_correct) and False not in sentence_correct,
                      answer=answer, answer_correct=answer == example.answer, sentences=sentences, spans=spans,
                      sentence_correct=sentence_correct)
