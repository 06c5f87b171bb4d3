"""What the text tasks (``chains``, ``babi``) share: seeded chunked generation, sentence splitting with character
offsets, normalisation, answer parsing and the :class:`TraceCheck` a checker returns.

Traces are written as space-separated words and punctuation tokens, so a word-level tokenizer sees a small closed
vocabulary; the parsing here is more forgiving (``b=7;`` reads like ``b = 7 ;``) and never raises on model output.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from kdlens.config import did_you_mean
from kdlens.validation import check_int, fail

SPLITS = ("train", "validation", "test")
STYLES = ("teacher", "student")
CHUNK = 1024  # examples per seeded stream: the first k of a split do not depend on n

Example = TypeVar("Example")
TERMINATORS = ".;?!\n"  # what ends a sentence by default
_PUNCTUATION = re.compile(r"([.,;:?!=+\-*()])")
_ANSWER = re.compile(r"\banswer\b(?: is| =| :)? (.+)$")


@dataclass
class TraceCheck:
    """What a checker found in one trace.

    Attributes
    ----------
    steps_correct : one bool per gold step of the example: stated, and stated right every time it was stated
    trace_correct : every gold step correct and no sentence wrong; None when the checker cannot judge the trace
    answer : the final answer parsed from the trace (normalised), or None when no answer sentence was found
    answer_correct : ``answer`` equals the gold answer exactly
    sentences : the trace split into sentences, each ``text[start:end]`` for its span
    spans : (start, end) character offsets of each sentence into the trace, end exclusive
    sentence_correct : per sentence, True / False for a checkable statement made right / wrong, None otherwise
    """

    steps_correct: list[bool]
    trace_correct: bool | None
    answer: str | None
    answer_correct: bool
    sentences: list[str]
    spans: list[tuple[int, int]]
    sentence_correct: list[bool | None]


def normalize(text: str) -> str:
    """Lower case, a space either side of every punctuation mark and operator, runs of whitespace as one space.

    Examples
    --------
    >>> normalize("The answer:  B=7;")
    'the answer : b = 7 ;'
    """
    return " ".join(_PUNCTUATION.sub(r" \1 ", text.lower()).split())


def strip_terminator(sentence: str) -> str:
    """A normalised sentence without its closing ``.``, ``;``, ``?`` or ``!``."""
    return sentence.rstrip(TERMINATORS + " ")


@functools.lru_cache(maxsize=16)
def sentence_pattern(terminators: str = TERMINATORS) -> re.Pattern:
    """A sentence: everything up to and including the next of ``terminators`` (or the end of the text); a ``.``
    with a digit after it and no letter before it is a decimal point, not an end (``3.5`` and ``.5`` keep it)."""
    if not isinstance(terminators, str) or not terminators:
        fail("terminators", "a non-empty str of the characters that end a sentence", repr(terminators),
             f"The default is {TERMINATORS!r}.")
    marks = "".join(re.escape(ch) for ch in dict.fromkeys(terminators))
    decimal = r"|(?<![^\W\d])\.(?=\d)" if "." in terminators else ""
    return re.compile(rf"(?:[^{marks}]{decimal})*(?:[{marks}]|$)")


def split_sentences(text: str, terminators: str = TERMINATORS) -> tuple[list[str], list[tuple[int, int]]]:
    """Split ``text`` after each of ``terminators`` (default ``.``, ``;``, ``?``, ``!`` and newline) into sentences
    and their character spans.

    A sentence keeps its terminator, loses surrounding whitespace, and needs at least one letter or digit (stray
    punctuation is skipped). A decimal point is no terminator: a ``.`` with a digit after it and no letter before it
    (``3.5``, ``$.50``) stays inside its sentence.

    Returns
    -------
    sentences : list of str, ``text[start:end]`` for each span
    spans : list of (start, end) character offsets, end exclusive

    Examples
    --------
    >>> split_sentences("a = 3 ; b = 7 ; answer 7")
    (['a = 3 ;', 'b = 7 ;', 'answer 7'], [(0, 7), (8, 15), (16, 24)])
    >>> split_sentences("3.5 * 2 = 7. Step 2.5 costs $.50.")[0]
    ['3.5 * 2 = 7.', 'Step 2.5 costs $.50.']
    """
    sentences, spans = [], []
    for match in sentence_pattern(terminators).finditer(text):
        piece = match.group()
        if not any(ch.isalnum() for ch in piece):
            continue
        start = match.start() + len(piece) - len(piece.lstrip())
        end = match.end() - (len(piece) - len(piece.rstrip()))
        sentences.append(text[start:end])
        spans.append((start, end))
    return sentences, spans


def answer_in(sentence: str) -> str | None:
    """The answer a normalised sentence gives (``... answer is X``, ``answer X``), or None when it gives none."""
    match = _ANSWER.search(strip_terminator(sentence))
    return match.group(1).strip() if match else None


def parse_answer(text: str) -> str | None:
    """The final answer of a trace: what its last answer sentence names, normalised; None when there is none.

    Parameters
    ----------
    text : a trace in any style, or any string (never raises on a string)

    Examples
    --------
    >>> parse_answer("b is 7 . The answer is 7 .")
    '7'
    >>> parse_answer("where_is ; answer kitchen"), parse_answer("no idea")
    ('kitchen', None)
    """
    check_text(text)
    answer = None
    for sentence in split_sentences(text)[0]:
        answer = answer_in(normalize(sentence)) or answer
    return answer


def check_text(text) -> str:
    if not isinstance(text, str):
        fail("text", "a str (the generated trace)", type(text).__name__, "Decode the model's tokens first.",
             error=TypeError)
    return text


def check_style(style) -> str:
    if style not in STYLES:
        fail("style", "one of " + ", ".join(map(repr, STYLES)), repr(style), did_you_mean(style, STYLES).strip())
    return style


def check_example(example, cls: type) -> None:
    if not isinstance(example, cls):
        fail("example", f"a {cls.__name__}", type(example).__name__,
             "Pass an example from this task's make_split.", error=TypeError)


def draw_split(task: str, draw: Callable[[random.Random], Example], seed: int, split: str, n: int) -> list[Example]:
    """``n`` examples of ``split``, drawn in chunks of ``CHUNK`` from streams seeded by (task, seed, split, chunk)."""
    if split not in SPLITS:
        fail("split", "one of " + ", ".join(map(repr, SPLITS)), repr(split), did_you_mean(split, SPLITS).strip())
    n = check_int(n, "n", 1)
    examples = []
    for chunk in range(math.ceil(n / CHUNK)):
        digest = hashlib.sha256(f"kdlens.{task}/{seed}/{split}/{chunk}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "little"))
        examples.extend(draw(rng) for _ in range(min(CHUNK, n - chunk * CHUNK)))
    return examples
