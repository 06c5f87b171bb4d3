"""Arithmetic in free-text reasoning traces: every equation a trace states, checked exactly, and which of a worked
solution's intermediate results the trace reaches.

Text is read by a small tokenizer and a recursive-descent parser over :class:`fractions.Fraction`; nothing is ever
handed to ``eval``. The parser knows numbers (``1,200``, ``3.5``, ``.5``, ``$12``, ``20%``), ``+ - * /`` and their
look-alikes (``x × · ÷ −``, LaTeX ``\\times``), the words plus / minus / times / multiplied by / divided by, ``of``
after a percent or a fraction (``20% of 50``), parentheses, and powers (``2^10``, ``2**10``) with a whole exponent
and a result under ``MAX_BITS`` bits. A percent is a hundredth; adding one to a plain number is refused as
ambiguous (``100 + 10%``), except to 1, where both readings agree (``1 - 20%``).

An equation is a chain of sides joined by ``=`` (or "equals", "is", "is equal to"), the first of which has an
operator; it is right when every side equals the first. What is checked is narrow on purpose, since a right trace
marked wrong is the worst mistake a checker can make:

- never checked: a side cut off by a word (``5 cookies * 3 = 15`` reads ``* 3``), variables (``b = a + 4``,
  ``2x + 3 = 7``), an equation in a question (``3 + 4 = 8?``), a result followed by a comparison, a hedge or a
  remainder (``is 5 more than``, ``= 14 approx``, ``= 14 remainder 2``), dates, times, ratios, versions, ranges
  written ``10-20``, and numbers glued to words (``H2O``, ``15kg``, ``x.5``);
- markdown around an equation is skipped: ``**48 / 2 = 24**``, ``= **15**``, bullets ``- 3 + 4 = 7``;
- a stated decimal is right when the exact value rounds to it at its number of places (``10 / 3 = 3.33``; a tie
  either way); a whole number must be exact (``7 / 2 = 3`` is wrong);
- a percent may be written on either scale: ``3/4 * 100 = 75%`` and ``3/4 = 75%`` are both right;
- a later side that is itself an expression with decimals (``= 3.33 * 3``) is checked only when it is exact;
- a chain is read as people write running totals: each side states the value so far, or starts from it and goes
  on (``48 / 2 = 24 + 10 = 34`` is right: 48 / 2 = 24, then 24 + 10 = 34); ``2 + 3 = 6 + 4 = 10`` is wrong.

GSM8K calculator annotations (``48/2 = <<48/2=24>>24``) are checked inside the brackets; the text around them is
then not a second equation.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from fractions import Fraction

from kdlens.tasks.text import check_text, split_sentences
from kdlens.validation import fail

MAX_BITS = 10_000  # a value's numerator and denominator stay under this many bits (about 3,000 digits)
MAX_DEPTH = 100  # nested parentheses, signs and powers
MAX_DIGITS = 1_000  # a longer run of digits is not read as a number

_NOTE = re.compile(r"<<([^<>\n]*)>>")
_DATE = re.compile(r"[0-9]{1,2}/[0-9]{1,2}/[0-9]{2,4}(?![0-9])|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?![0-9])"
                   r"|[0-9]{1,2}-[0-9]{1,2}-[0-9]{4}(?![0-9])")
_NUMBER = re.compile(r"((?:\\?[$€£])?)(?:([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.([0-9]+))?|\.([0-9]+))"
                     r"([ \t]?%|[ \t]+per[ \t]?cent\b)?", re.IGNORECASE)
_GLUED = re.compile(r"(?:\\?[$€£])?(?:\w|[.,:/%](?=\w))+")  # digits run into letters, points, colons: 2x, 3:00
_WORD = re.compile(r"[^\W\d][\w']*")
_LATEX = re.compile(r"\\(times|cdot|div)(?![A-Za-z])")
_WORD_OPERATOR = re.compile(r"(plus|minus|times|multiplied[ \t]+by|divided[ \t]+by|of|is[ \t]+equal[ \t]+to"
                            r"|equal[ \t]+to|equals|is)\b", re.IGNORECASE)
_WORD_OPERATORS = {"plus": "+", "minus": "-", "times": "*", "multiplied": "*", "divided": "/", "of": "of"}
_SYMBOLS = {"**": "^", "==": "=", "^": "^", "+": "+", "-": "-", "−": "-", "*": "*", "×": "*", "·": "*", "⋅": "*",
            "∗": "*", "/": "/", "÷": "/", "=": "=", "(": "(", ")": ")"}
_NOT_A_RESULT = {"more", "less", "fewer", "greater", "larger", "smaller", "bigger", "higher", "lower", "longer",
                 "shorter", "older", "younger", "than", "short", "shy", "approx", "approximately", "roughly", "about",
                 "nearly", "almost", "around"}  # a word after the result that makes it no claim of equality
_REMAINDER = re.compile(r"remainder|rem|r|r[0-9]+", re.IGNORECASE)
_EXPRESSION = {"num", "op", "(", ")"}
_TERMINATORS = {".", ";", "?", "!", "\n"}


@dataclass(frozen=True)
class Equation:
    """One equation a trace states, and whether it holds.

    Attributes
    ----------
    text : the equation as written, ``trace[span[0]:span[1]]`` (inside the brackets for a GSM8K annotation)
    span : (start, end) character offsets into the trace, end exclusive
    value : the exact value of the left-hand expression (a percent is a hundredth: ``100% - 20%`` is 4/5)
    stated : the result written on the last side, a percent sign dropped (``= 75%`` states 75); the value of that
        side when it is an expression
    correct : every side equals the left-hand value (stated decimals within their rounding)
    """

    text: str
    span: tuple[int, int]
    value: Fraction
    stated: Fraction
    correct: bool


@dataclass(frozen=True)
class ArithmeticCheck:
    """What :func:`check_arithmetic` found in one trace.

    Attributes
    ----------
    equations : every checkable equation of the trace, in order (:func:`find_equations`)
    gold : the solution's intermediate results, in order (:func:`gold_results`); [] without a solution
    reached : per gold result, whether any number stated in the trace equals it (:func:`numbers_in`)
    sentence_correct : per sentence of :func:`~kdlens.tasks.text.split_sentences`, True when it holds equations and
        all are right, False when one is wrong, None when it holds none
    trace_correct : with gold results, all reached and no equation wrong; without, no equation wrong, or None when
        the trace states no checkable equation
    """

    equations: list[Equation]
    gold: list[Fraction]
    reached: list[bool]
    sentence_correct: list[bool | None]
    trace_correct: bool | None


@dataclass(frozen=True)
class _Token:
    kind: str  # num, op, (, ), eq, word (also digits run into letters: 2x, 3:00), mark (punctuation, date), note
    text: str
    start: int
    end: int
    op: str = ""  # for op: + - * / ^ of
    value: Fraction = Fraction(0)  # for num: the value meant (20% is 1/5)
    written: Fraction = Fraction(0)  # for num: the number written (20% is 20)
    places: int = 0  # for num: digits after the decimal point
    percent: bool = False
    inner: tuple[_Token, ...] = ()  # for note: the tokens inside << >>


@dataclass(frozen=True)
class _Value:
    value: Fraction
    percent: bool  # a percentage (20%, 100% - 20%), not yet applied to a quantity


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression, read by a parser of numbers and operators only.

    Parameters
    ----------
    expression : numbers (``1,200``, ``3.5``, ``$12``, ``20%``), ``+ - * /`` and ``x × · ÷ −``, the words plus,
        minus, times, multiplied by, divided by, ``of`` after a percent or fraction, parentheses, and ``^`` / ``**``
        with a whole exponent (results under ``MAX_BITS`` bits)

    Returns
    -------
    Fraction, exact (``20%`` is 1/5)

    Raises
    ------
    ValueError
        On an empty string, anything that is not arithmetic (names, calls, code), division by zero, a power too
        large, nesting deeper than ``MAX_DEPTH``, or a percent added to a plain number (``100 + 10%``).

    Examples
    --------
    >>> evaluate("3 + 4 * 2"), evaluate("(3 + 4) x 2"), evaluate("20% of 50"), evaluate("1/2 + 1/4")
    (Fraction(11, 1), Fraction(14, 1), Fraction(10, 1), Fraction(3, 4))
    >>> evaluate("__import__('os')")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: Expected `expression` to be arithmetic (...), but got '__import__' at character 0 of ... never run.
    """
    if not isinstance(expression, str):
        fail("expression", "a str", type(expression).__name__, error=TypeError)
    if not expression.strip():
        fail("expression", "an arithmetic expression", repr(expression), "Write numbers and operators: '48 / 2'.")
    tokens = _tokenize(expression, prose=False)
    for token in tokens:
        if token.kind not in _EXPRESSION:
            fail("expression", "arithmetic (numbers, + - * / ^ and parentheses)",
                 f"{token.text!r} at character {token.start} of {expression!r}",
                 "Names, calls and code are never run.")
    return _Parser(tokens, expression).parse().value


def find_equations(text: str) -> list[Equation]:
    """Every checkable equation stated in ``text``, in order of appearance (see the module for what is checked).

    Never raises on a string: what cannot be read is not an equation.

    Examples
    --------
    >>> [(e.text, e.correct) for e in find_equations("She sold 48/2 = 24 clips. 48 + 24 = 71. So x = 72.")]
    [('48/2 = 24', True), ('48 + 24 = 71', False)]
    >>> [e.text for e in find_equations("5 cookies * 3 = 15, and b = a + 4")]
    []
    """
    tokens = _tokenize(check_text(text))
    equations = []
    for token in tokens:
        if token.kind == "note":
            equations.extend(_equations(text, list(token.inner)))
    equations.extend(_equations(text, tokens))
    return sorted(equations, key=lambda e: e.span)


def numbers_in(text: str) -> list[Fraction]:
    """Every number stated in ``text``, in order, as written.

    Commas (``1,234``), currency (``$5.50``), signs (``-3``) and percents (``50%`` is 50, the number written) are
    read; two whole numbers ``a/b`` written without spaces are one number (``3/4``); dates, times, versions and
    numbers inside words (``x2``, ``H2O``, ``15kg``) are not numbers, nor is a run of over ``MAX_DIGITS`` digits.

    Examples
    --------
    >>> [str(x) for x in numbers_in("Sold 1,234 at $5.50, 3/4 of them, -3 left, 50% on 12/25/2020, H2O x2.")]
    ['1234', '11/2', '3/4', '-3', '50']
    """
    tokens = _flat(_tokenize(check_text(text)))
    numbers, k = [], 0
    while k < len(tokens):
        token = tokens[k]
        if token.kind != "num":
            k += 1
            continue
        number, used = token.written, 1
        if _fraction_at(tokens, k):
            number, used = token.written / tokens[k + 2].written, 3
        if _negative(tokens, k):
            number = -number
        numbers.append(number)
        k += used
    return numbers


def gold_results(solution: str) -> list[Fraction]:
    """A worked solution's intermediate results, in order, each once.

    The results of its GSM8K calculator annotations (``<<48/2=24>>`` gives 24) when it has any; else the stated
    results of its equations (:func:`find_equations`); else none.

    Examples
    --------
    >>> gold_results("Natalia sold 48/2 = <<48/2=24>>24 clips. 48+24 = <<48+24=72>>72 in all.\\n#### 72")
    [Fraction(24, 1), Fraction(72, 1)]
    >>> gold_results("3 * 4 = 12 eggs, 12 - 2 = 10 left"), gold_results("Ten eggs.")
    ([Fraction(12, 1), Fraction(10, 1)], [])
    """
    tokens = _tokenize(check_text(solution))
    notes = [token for token in tokens if token.kind == "note"]
    if notes:
        results = [result for note in notes if (result := _note_result(list(note.inner))) is not None]
    else:
        results = [equation.stated for equation in find_equations(solution)]
    return list(dict.fromkeys(results))


def check_arithmetic(text: str, solution: str | None = None) -> ArithmeticCheck:
    """Check every equation of a trace and, given a worked solution, which of its results the trace reaches.

    Parameters
    ----------
    text : the trace (any string: never raises on one)
    solution : a gold worked solution (GSM8K style with ``<<...>>`` annotations, or plain equations), or None

    Returns
    -------
    ArithmeticCheck; ``trace_correct`` is True when every gold result is reached and no equation is wrong (with a
    solution that has results), else when no equation is wrong, and None when there is neither a gold result nor
    an equation to judge.

    Examples
    --------
    >>> check = check_arithmetic("48/2 = 24 in May. 48 + 24 = 72. The answer is 72.",
    ...                          "48/2 = <<48/2=24>>24 in May; 48+24 = <<48+24=72>>72.")
    >>> check.reached, check.sentence_correct, check.trace_correct
    ([True, True], [True, True, None], True)
    >>> check_arithmetic("I think it is 7.").trace_correct is None
    True
    """
    check_text(text)
    if solution is not None:
        check_text(solution)
    equations = find_equations(text)
    gold = gold_results(solution) if solution else []
    stated = set(numbers_in(text))
    reached = [result in stated for result in gold]
    spans = split_sentences(text)[1]
    marks: list[list[bool]] = [[] for _ in spans]
    for equation in equations:  # an equation never crosses a sentence end: the sentence it starts in holds it
        k = bisect.bisect_right(spans, (equation.span[0], len(text))) - 1
        if k >= 0 and equation.span[0] < spans[k][1]:
            marks[k].append(equation.correct)
    sentence_correct = [all(inside) if inside else None for inside in marks]
    no_wrong = all(e.correct for e in equations)
    if gold:
        trace_correct = all(reached) and no_wrong
    else:
        trace_correct = no_wrong if equations else None
    return ArithmeticCheck(equations=equations, gold=gold, reached=reached, sentence_correct=sentence_correct,
                           trace_correct=trace_correct)


def _tokenize(text: str, offset: int = 0, prose: bool = True) -> list[_Token]:
    """Tokens of ``text`` (spaces and tabs dropped, newlines kept as marks), offsets into the enclosing text. In
    ``prose`` dates are marks and markdown is dropped (:func:`_resolve`); an expression alone is read as maths."""
    tokens, pos = [], 0
    while pos < len(text):
        char = text[pos]
        if char in " \t\r\f\v":
            pos += 1
            continue
        if match := _NOTE.match(text, pos):
            inner = tuple(_tokenize(match.group(1), offset + match.start(1)))
            tokens.append(_Token("note", match.group(), offset + pos, offset + match.end(), inner=inner))
        elif prose and (match := _DATE.match(text, pos)):
            tokens.append(_Token("mark", match.group(), offset + pos, offset + match.end()))
        elif match := _NUMBER.match(text, pos):
            tokens.append(_number(text, match, offset))
        elif match := _WORD_OPERATOR.match(text, pos):
            name = match.group(1).split()[0].lower()
            kind, op = ("op", _WORD_OPERATORS[name]) if name in _WORD_OPERATORS else ("eq", "=")
            tokens.append(_Token(kind, match.group(), offset + pos, offset + match.end(), op=op))
        elif match := _WORD.match(text, pos):
            tokens.append(_Token("word", match.group(), offset + pos, offset + match.end()))
        elif match := _LATEX.match(text, pos):
            op = "/" if match.group(1) == "div" else "*"
            tokens.append(_Token("op", match.group(), offset + pos, offset + match.end(), op=op))
        else:
            symbol = text[pos:pos + 2] if text[pos:pos + 2] in _SYMBOLS else char
            op = _SYMBOLS.get(symbol, "")
            kind = {"": "mark", "=": "eq", "(": "(", ")": ")"}.get(op, "op")
            tokens.append(_Token(kind, symbol, offset + pos, offset + pos + len(symbol), op=op))
        pos = tokens[-1].end - offset
    return _resolve(tokens, prose)


def _number(text: str, match: re.Match, offset: int) -> _Token:
    """A number token; a word when the digits run on into letters, points or colons (``2x``, ``1.2.3``, ``3:00``)
    or a point follows a letter (``x.5``)."""
    start, end = match.span()
    _, whole, fraction, bare, percent = match.groups()
    after = text[end:end + 2]
    behind = text[start - 1:start]
    glued = after[:1].isalnum() or after[:1] == "_" or (after[:1] in ".,:" and after[1:].isdigit())
    if glued or (bare is not None and behind != "" and (behind.isalnum() or behind in "._")):
        end = _GLUED.match(text, start).end()
        return _Token("word", text[start:end], offset + start, offset + end)
    digits = (whole or "").replace(",", "") + (fraction or bare or "")
    if len(digits) > MAX_DIGITS:
        return _Token("mark", text[start:end], offset + start, offset + end)
    places = len(fraction or bare or "")
    written = Fraction(int(digits), 10 ** places)
    return _Token("num", text[start:end], offset + start, offset + end, written=written, places=places,
                  value=written / 100 if percent else written, percent=bool(percent))


def _resolve(tokens: list[_Token], prose: bool) -> list[_Token]:
    """Read the tokens whose role depends on their neighbours: ``x`` and ``of`` are products between two operands
    only; in prose, ``*`` / ``**`` not between operands and glued on one side only (or opening a line) are markdown
    and dropped, as is a ``-`` bullet, and ``10-20`` is a range, not a subtraction."""
    resolved = []
    for k, token in enumerate(tokens):
        before = tokens[k - 1] if k else None
        after = tokens[k + 1] if k + 1 < len(tokens) else None
        between = _ends_operand(before) and _starts_operand(after)
        line_start = before is None or before.text == "\n"
        glued_before = before is not None and before.end == token.start
        glued_after = after is not None and after.start == token.end
        if token.kind == "word" and token.text in ("x", "X") and between:
            token = _Token("op", token.text, token.start, token.end, op="*")
        elif token.op == "of" and not (_starts_operand(after) and (
                (before is not None and (before.percent or before.kind == ")")) or _fraction_at(tokens, k - 3))):
            token = _Token("word", token.text, token.start, token.end)
        elif not prose:
            pass
        elif token.text in ("*", "**") and not between and (line_start or glued_before != glued_after):
            continue
        elif token.text == "-" and line_start and not glued_after:
            continue
        elif (token.text == "-" and glued_before and glued_after and before.kind == after.kind == "num"
              and before.written < after.written):
            token = _Token("mark", token.text, token.start, token.end)
        resolved.append(token)
    return resolved


def _ends_operand(token: _Token | None) -> bool:
    return token is not None and token.kind in ("num", ")")


def _starts_operand(token: _Token | None) -> bool:
    return token is not None and (token.kind in ("num", "(") or token.op == "-")


def _fraction_at(tokens: list[_Token], k: int) -> bool:
    """Whether ``tokens[k:k + 3]`` is a fraction written without spaces (``3/4``), not part of a longer run."""
    if k < 0 or k + 2 >= len(tokens):
        return False
    top, bar, bottom = tokens[k:k + 3]
    return (top.kind == bottom.kind == "num" and bar.text == "/" and top.end == bar.start and bar.end == bottom.start
            and not top.places and not bottom.places and not top.percent and not bottom.percent
            and bottom.written != 0 and not (k + 3 < len(tokens) and tokens[k + 3].start == bottom.end
                                             and tokens[k + 3].text == "/"))


def _negative(tokens: list[_Token], k: int) -> bool:
    """Whether the number at ``k`` has a minus sign of its own: ``-3``, not ``5-3`` or ``well-3``."""
    if k == 0 or tokens[k - 1].op != "-" or tokens[k - 1].end != tokens[k].start:
        return False
    sign = tokens[k - 1]
    before = tokens[k - 2] if k >= 2 else None
    return before is None or before.end < sign.start or before.kind not in ("num", "word", ")")


def _flat(tokens: list[_Token]) -> list[_Token]:
    return [t for token in tokens for t in (token.inner if token.kind == "note" else (token,))]


def _equations(text: str, tokens: list[_Token]) -> list[Equation]:
    """The equations in each maximal run of expression tokens and equals signs: each chain of non-empty sides."""
    equations, k = [], 0
    while k < len(tokens):
        if tokens[k].kind not in _EXPRESSION | {"eq"}:
            k += 1
            continue
        end = k
        while end < len(tokens) and tokens[end].kind in _EXPRESSION | {"eq"}:
            end += 1
        bounds, start = [], k  # each side as a (start, stop) range of token indices
        for j in range(k, end + 1):
            if j == end or tokens[j].kind == "eq":
                bounds.append((start, j))
                start = j + 1
        chain: list[tuple[int, int]] = []
        for lo, hi in bounds + [(0, 0)]:
            if hi > lo:
                chain.append((lo, hi))
                continue
            if len(chain) >= 2:
                before = tokens[chain[0][0] - 1] if chain[0][0] else None
                equation = _chain(text, [tokens[a:b] for a, b in chain], before, _rest(tokens, chain[-1][1]))
                if equation is not None:
                    equations.append(equation)
            chain = []
        k = end
    return equations


def _rest(tokens: list[_Token], k: int) -> list[_Token]:
    """The tokens from ``k`` to the end of their sentence, its terminator included."""
    end = k
    while end < len(tokens) and tokens[end].text not in _TERMINATORS:
        end += 1
    return tokens[k:end + 1]


def _chain(text: str, sides: list[list[_Token]], before: _Token | None, rest: list[_Token]) -> Equation | None:
    """The equation ``sides[0] = sides[1] = ...`` (``rest``: the rest of its sentence), or None when it is not one
    to check: in a question, a comparison, a rough or integer-division result, a side cut off or unreadable."""
    words = [token.text.lower() for token in rest if token.kind != "eq"]
    if words and (words[-1] == "?" or words[0] in _NOT_A_RESULT or any(map(_REMAINDER.fullmatch, words[:3]))):
        return None
    sides = [_trim_first(sides[0])] + sides[1:-1] + [_trim_last(sides[-1])]
    for i, side in enumerate(sides):
        if not side or side[-1].kind == "op":
            return None
        first = side[0]
        if first.kind == "op":
            glued_before = (i == 0 and before is not None and before.end == first.start
                            and (before.kind == "word" or before.text[-1:].isalnum()))
            if first.op != "-" or len(side) < 2 or side[1].start != first.end or glued_before:
                return None
    try:
        parser = _Parser(sides[0], text[sides[0][0].start:sides[0][-1].end])
        left = parser.parse()
        if parser.binary == 0:
            return None
        correct, current = True, left
        for side in sides[1:]:
            right = _Parser(side, text[side[0].start:side[-1].end]).parse()
            if _agrees(current, right, side):
                continue
            if _runs_on(current, side):  # a running total: "48 / 2 = 24 + 10 = 34" is 48 / 2 = 24, 24 + 10 = 34
                current = right
                continue
            if not _literal(side) and any(t.places for t in side):
                return None  # an expression of rounded numbers: how far off it may be is unknown
            correct = False
    except ValueError:
        return None
    last = sides[-1]
    stated = (-1 if last[0].op == "-" else 1) * last[-1].written if _literal(last) else right.value
    start, end = sides[0][0].start, last[-1].end
    return Equation(text=text[start:end], span=(start, end), value=left.value, stated=stated, correct=correct)


def _trim_first(side: list[_Token]) -> list[_Token]:
    """The first side without what belongs to the text before it: ``1) 3 + 4`` reads ``3 + 4``, ``(3 + 4`` too."""
    depth, start = 0, 0
    for k, token in enumerate(side):
        depth += {"(": 1, ")": -1}.get(token.kind, 0)
        if depth < 0:
            depth, start = 0, k + 1
    surplus = sum(t.kind == "(" for t in side[start:]) - sum(t.kind == ")" for t in side[start:])
    while surplus > 0 and start < len(side) and side[start].kind == "(":
        start, surplus = start + 1, surplus - 1
    return side[start:]


def _trim_last(side: list[_Token]) -> list[_Token]:
    """The last side without a ``)`` closing a parenthesis opened before the equation, and without a ``(`` never
    closed and what follows it (``15 (5 boxes)`` reads ``15``)."""
    surplus, end = sum(t.kind == ")" for t in side) - sum(t.kind == "(" for t in side), len(side)
    while surplus > 0 and end and side[end - 1].kind == ")":
        end, surplus = end - 1, surplus - 1
    side = side[:end]
    opened = []
    for k, token in enumerate(side):
        if token.kind == "(":
            opened.append(k)
        elif token.kind == ")" and opened:
            opened.pop()
    return side[:opened[0]] if opened else side


def _runs_on(current: _Value, side: list[_Token]) -> bool:
    """Whether an expression side starts from the value so far (``= 24 + 10`` after a side worth 24)."""
    first = side[0]
    if _literal(side) or first.kind != "num":
        return False
    return _agrees(current, _Value(first.value, first.percent), [first])


def _literal(side: list[_Token]) -> bool:
    return len(side) == 1 or (len(side) == 2 and side[0].op == "-")


def _agrees(left: _Value, right: _Value, side: list[_Token]) -> bool:
    """Whether a later side states the left-hand value: exactly, or within the rounding of a stated decimal, with a
    percent read on either scale (``3/4 * 100 = 75%``, ``100% - 20% = 80``)."""
    if right.percent:
        written, candidates = right.value * 100, [left.value * 100] + ([left.value] if not left.percent else [])
    else:
        written, candidates = right.value, [left.value] + ([left.value * 100] if left.percent else [])
    places = side[-1].places if _literal(side) else 0
    tolerance = Fraction(1, 2 * 10 ** places) if places else 0
    return any(abs(candidate - written) <= tolerance for candidate in candidates)


def _note_result(tokens: list[_Token]) -> Fraction | None:
    """The number after the last ``=`` of a calculator annotation, or None when it is not a number."""
    equals = [k for k, token in enumerate(tokens) if token.kind == "eq"]
    if not equals:
        return None
    result = tokens[equals[-1] + 1:]
    if not result or not _literal(result) or result[-1].kind != "num":
        return None
    return (-1 if result[0].op == "-" else 1) * result[-1].written


class _Parser:
    """Recursive descent over tokens: sum := product (+|- product)*, product := signed (*|/|of signed)*,
    signed := (+|-) signed | power, power := atom (^ signed)?, atom := number | ( sum )."""

    def __init__(self, tokens: list[_Token], source: str):
        self.tokens, self.source, self.k, self.depth, self.binary = tokens, source, 0, 0, 0

    def parse(self) -> _Value:
        if not self.tokens:
            self.fail("an arithmetic expression", "nothing")
        value = self.sum()
        if self.k < len(self.tokens):
            self.fail("an operator or the end", self.where(self.tokens[self.k]))
        return value

    def sum(self) -> _Value:
        left = self.product()
        while self.peek() in ("+", "-"):
            op = self.next().op
            right = self.product()
            if left.percent != right.percent and (left.percent or left.value != 1):  # 1 - 20% reads one way
                fail("expression", "percentages added to percentages only", repr(self.source),
                     "100 + 10% is ambiguous: write 100 * 110% or 100 + 10% of 100.", verb="have")
            left = self.sized(_Value(left.value + right.value if op == "+" else left.value - right.value,
                                     left.percent and right.percent))
        return left

    def product(self) -> _Value:
        left = self.signed()
        while self.peek() in ("*", "/", "of"):
            op = self.next().op
            right = self.signed()
            if op == "/":
                if right.value == 0:
                    fail("expression", "free of division by zero", repr(self.source))
                left = _Value(left.value / right.value, left.percent and not right.percent)
            else:
                left = _Value(left.value * right.value, left.percent and right.percent)
            left = self.sized(left)
        return left

    def signed(self) -> _Value:
        if self.peek() not in ("+", "-"):
            return self.power()
        op = self.next().op
        self.enter()
        value = self.signed()
        self.depth -= 1
        return _Value(-value.value, value.percent) if op == "-" else value

    def power(self) -> _Value:
        base = self.atom()
        if self.peek() != "^":
            return base
        self.next()
        self.enter()
        exponent = self.signed().value
        self.depth -= 1
        bits = max(abs(base.value.numerator).bit_length(), base.value.denominator.bit_length()) - 1
        if exponent.denominator != 1 or bits * abs(exponent) > MAX_BITS:  # a lower bound: sized() checks after
            fail("expression", f"powers with a whole exponent and a result under {MAX_BITS} bits",
                 f"{base.value} ^ {exponent} in {self.source!r}", "Only small powers are checked.", verb="have")
        if base.value == 0 and exponent < 0:
            fail("expression", "free of division by zero", repr(self.source))
        return self.sized(_Value(base.value ** int(exponent), False))

    def atom(self) -> _Value:
        if self.k >= len(self.tokens):
            self.fail("a number or '(' after the last operator", f"the end of {self.source!r}")
        token = self.next()
        if token.kind == "num":
            return _Value(token.value, token.percent)
        if token.kind != "(":
            self.fail("a number or '('", self.where(token))
        self.enter()
        inside = self.sum()
        if self.peek() != ")":
            self.fail("a closing ')'", self.where(self.tokens[self.k]) if self.k < len(self.tokens) else "the end")
        self.next()
        self.depth -= 1
        return inside

    def peek(self) -> str:
        if self.k >= len(self.tokens):
            return ""
        token = self.tokens[self.k]
        return token.op if token.kind == "op" else token.kind

    def next(self) -> _Token:
        self.k += 1
        token = self.tokens[self.k - 1]
        if token.kind == "op" and self.k > 1 and self.tokens[self.k - 2].kind in ("num", ")"):
            self.binary += 1
        return token

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            fail("expression", f"at most {MAX_DEPTH} levels deep", f"deeper nesting in {self.source[:40]!r}...",
                 verb="nest")

    def sized(self, value: _Value) -> _Value:
        if max(value.value.numerator.bit_length(), value.value.denominator.bit_length()) > MAX_BITS:
            fail("expression", f"values under {MAX_BITS} bits", f"a larger one in {self.source[:40]!r}...",
                 "Numbers that large are not checked.", verb="have")
        return value

    def where(self, token: _Token) -> str:
        return f"{token.text!r} at character {token.start} of {self.source!r}"

    def fail(self, expected: str, got: str) -> None:
        fail("expression", expected, got)
