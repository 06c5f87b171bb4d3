"""Final answers out of free text, and whether two answers are the same: the two steps every question set needs.

Extractors (each returns the answer as written, or None when the text holds none):

- ``last_number``: the last number (``1,234.5``, ``-3``, ``3/4``, ``$12``, ``45%`` all count);
- ``boxed``: the contents of the last ``\\boxed{...}`` (braces nest);
- ``answer_is``: what follows the last "the answer is", "answer:", "final answer:" or "#### " (GSM8K's marker),
  up to the end of its sentence or line;
- ``choice``: a choice letter ("(B)", "answer is C", "B." at the start of a line, a letter alone);
- ``regex``: the first group (else the whole match) of the last match of a pattern of yours;
- ``sentence``: for word answers, ``answer_is``, else the last sentence ("Mary is in the kitchen.");
- ``auto``: ``boxed``, else ``answer_is``, else ``last_number``.

Each looks after a ``<think> ... </think>`` block only (markers configurable); a block the model never closed holds
no answer, however many numbers its reasoning has.

Comparisons: ``numeric`` (both parsed as numbers; commas, currency, percent signs and trailing units stripped;
equal within an absolute ``tolerance``, default 1e-6: 1,000,000 is not 1,000,001), ``exact`` (after stripping spaces),
``normalized`` (lower case, punctuation and the articles a/an/the dropped, spaces collapsed), ``contains`` (the
normalised gold is a run of whole words of the normalised answer: "kitchen" in "mary is in the kitchen"; for word
answers read with ``sentence``; it cannot tell "not in the kitchen" apart), ``choice`` (the same letter; a gold
given as a choice's text is mapped to its letter).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

from kdlens import validation as C

EXTRACTORS = ("auto", "last_number", "boxed", "answer_is", "choice", "regex", "sentence")
COMPARISONS = ("numeric", "exact", "normalized", "contains", "choice")
LETTERS = "ABCDEFGHIJ"

_NUMBER = re.compile(r"(?<![\w.])[-−]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?%?(?![\w])|"
                     r"(?<![\w.])[-−]?\$?\.\d+%?")
_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*|####\s*", re.IGNORECASE)
_CHOICE_STRONG = re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*:?\s*\(?\**([A-J])\b\)?|\(([A-J])\)",
                            re.IGNORECASE)
_CHOICE_LINE = re.compile(r"^\s*\**([A-J])[.):]\s", re.MULTILINE)


THINK = ("<think>", "</think>")


def split_thinking(text: str, markers: tuple[str, str] = THINK) -> tuple[str | None, str | None]:
    """(reasoning, answer part) of a text that thinks in ``markers`` (R1 style ``<think> ... </think>``).

    No opening marker: (None, text), all of it is the answer part. A closed block: the text inside, and what
    follows the last closing marker. An unclosed block (the model stopped while thinking): (the rest, None): it
    gave no answer, and nothing in its reasoning counts as one.
    """
    start, end = markers
    if not isinstance(start, str) or not isinstance(end, str) or not start or not end:
        C.fail("markers", "two non-empty strings (opening, closing)", repr(markers))
    opened = text.find(start)
    if opened < 0:
        closed = text.rfind(end)  # some templates put the opening marker in the prompt
        return (text[:closed], text[closed + len(end):]) if closed >= 0 else (None, text)
    closed = text.rfind(end)
    if closed < opened:
        return text[opened + len(start):], None
    return text[opened + len(start):closed], text[closed + len(end):]


def extract_answer(text: str, how: str = "auto", pattern: str | None = None,
                   choices: Sequence[str] | None = None, think: tuple[str, str] | None = THINK) -> str | None:
    """The final answer in ``text`` by extractor ``how`` (see the module), or None when there is none.

    ``pattern`` is the ``regex`` extractor's; ``choices`` (the options' texts) lets ``choice`` take an answer
    written as an option's text. With ``think`` markers (default ``<think>``, ``</think>``; None for none) the
    answer is looked for after the reasoning block only, and a block never closed gives None
    (:func:`split_thinking`).
    """
    C.check_choice(how, "extract", EXTRACTORS)
    if think is not None:
        _, text = split_thinking(text, think)
        if text is None:
            return None
    if how == "auto":
        return (extract_answer(text, "boxed", think=None) or extract_answer(text, "answer_is", think=None)
                or extract_answer(text, "last_number", think=None))
    if how == "last_number":
        found = _NUMBER.findall(text)
        return found[-1] if found else None
    if how == "boxed":
        return _last_boxed(text)
    if how == "answer_is":
        return _after_marker(text)
    if how == "choice":
        return _choice(text, choices)
    if how == "sentence":
        return _after_marker(text) or _last_sentence(text)
    if pattern is None:
        C.fail("pattern", "a regular expression for extract: regex", "none",
               "Give one with a group around the answer, e.g. 'Result: (\\S+)'.")
    matches = list(re.finditer(pattern, text))
    if not matches:
        return None
    last = matches[-1]
    return (last.group(1) if last.groups() else last.group(0)).strip()


def _last_sentence(text: str) -> str | None:
    pieces = [p.strip() for p in re.split(r"(?<!\d)[.!?](?:\s|$)|\n", text) if any(c.isalnum() for c in p)]
    return pieces[-1].strip("* ") if pieces else None


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def _after_marker(text: str) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end():]
    line = rest.split("\n", 1)[0]
    sentence = re.split(r"(?<!\d)\.(?:\s|$)|\.$", line, maxsplit=1)[0]  # "3.5" keeps its point
    answer = sentence.strip().strip("*").strip().rstrip(".").strip()
    return answer or None


def _choice(text: str, choices: Sequence[str] | None) -> str | None:
    strong = [m.group(1) or m.group(2) for m in _CHOICE_STRONG.finditer(text)]
    if strong:
        return strong[-1].upper()
    line = _CHOICE_LINE.findall(text)
    if line:
        return line[-1].upper()
    if choices:
        said = normalize(text)
        named = [LETTERS[i] for i, c in enumerate(choices) if normalize(c) and normalize(c) in said]
        if len(named) == 1:
            return named[0]
    alone = re.findall(r"(?<![\w'])([A-J])(?![\w'])", text)
    allowed = set(LETTERS[: len(choices)]) if choices else set(LETTERS[:5])
    alone = [a for a in alone if a in allowed and a != "I"]
    return alone[-1] if alone else None


def parse_number(text: str | None) -> float | None:
    """The first number in ``text``, written with commas, a currency sign, a percent sign, a fraction (``3/4``,
    LaTeX ``\\frac{3}{4}``) or a unit after it ("1,234.5 kg" -> 1234.5, "3/4" -> 0.75, "$12" -> 12.0, "45%" ->
    45.0); None when there is no number to read. Number words ("twelve") and exponents ("1e3") are not read."""
    if text is None:
        return None
    text = re.sub(r"\\d?frac\{\s*(-?\d+)\s*\}\{\s*(\d+)\s*\}", r"\1/\2", text.replace("−", "-"))
    found = _NUMBER.findall(text)
    if not found:
        return None
    token = found[0].replace(",", "").replace("$", "").rstrip("%")
    try:
        if "/" in token:
            top, bottom = token.split("/")
            return float(top) / float(bottom) if float(bottom) != 0 else None
        return float(token)
    except ValueError:
        return None


def normalize(text: str) -> str:
    """Lower case, punctuation and the articles a / an / the removed, whitespace collapsed."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(word for word in text.split() if word not in ("a", "an", "the"))


def answers_match(predicted: str | None, gold: str, compare: str = "numeric", tolerance: float = 1e-6,
                  choices: Sequence[str] | None = None) -> bool:
    """Whether ``predicted`` (an extracted answer, or None) is ``gold`` under comparison ``compare``."""
    C.check_choice(compare, "compare", COMPARISONS)
    if predicted is None:
        return False
    if compare == "numeric":
        a, b = parse_number(predicted), parse_number(gold)
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12, abs_tol=tolerance)
    if compare == "exact":
        return predicted.strip() == gold.strip()
    if compare == "normalized":
        return normalize(predicted) == normalize(gold)
    if compare == "contains":
        said, wanted = normalize(predicted).split(), normalize(gold).split()
        return bool(wanted) and any(said[i:i + len(wanted)] == wanted for i in range(len(said) - len(wanted) + 1))
    letter = gold.strip().upper()
    if len(letter) != 1 and choices:
        named = [LETTERS[i] for i, c in enumerate(choices) if normalize(c) == normalize(gold)]
        letter = named[0] if named else letter
    return predicted.strip().upper() == letter
