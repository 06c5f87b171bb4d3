"""Your own questions from a local file (JSON lines, CSV or Parquet), read through Hugging Face ``datasets``.

Each row needs a question and its answer; optional columns give a worked solution (``trace``), a ``difficulty``
(a number, higher is harder), a ``category`` and the ``choices`` of a multiple-choice question (a list, or one
string of options separated by ``|``). ``fields`` maps these names to your columns. An answer written GSM8K's way
("... <<48/2=24>> ... #### 72") is split: the gold answer after the last ``####``, the solution before it.

Nothing is downloaded and nothing is cached outside a temporary folder. A bad file is one error naming it: no such
file, an empty file, a row that is not JSON (with its line number), a missing column (with the columns there
are), a row without a question or an answer (with its line).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kdlens import validation as C
from kdlens.config import did_you_mean

FIELDS = ("question", "answer", "trace", "difficulty", "category", "choices")
FORMATS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}  # format (and suffix) -> builder


@dataclass(frozen=True)
class Question:
    """One question: ``answer`` is the gold answer as text; ``line`` where it is in the file (1-based; CSV counts
    its header)."""

    question: str
    answer: str
    trace: str | None = None
    difficulty: float | None = None
    category: str | None = None
    choices: tuple[str, ...] | None = None
    line: int = 0


def load_questions(path: str | Path, format: str | None = None, fields: dict[str, str] | None = None,
                   n: int | None = None) -> list[Question]:
    """The first ``n`` questions (all when None) of a local file.

    Parameters
    ----------
    path : a .jsonl / .json, .csv or .parquet file
    format : "jsonl" | "csv" | "parquet", or None to go by the suffix
    fields : our name (``question``, ``answer``, ``trace``, ``difficulty``, ``category``, ``choices``) -> your
        column; unmapped names are looked up as themselves
    """
    path = Path(path)
    if not path.is_file():
        C.fail("path", "a questions file (.jsonl, .csv or .parquet)", f"{path} (no such file)",
               error=FileNotFoundError)
    builder = _builder(path, format)
    columns = _columns(fields)
    if path.stat().st_size == 0:
        C.fail(str(path), "a file with at least one question", "an empty file")
    if builder == "json":
        _check_json_lines(path)
    rows = _read(path, builder)
    if not rows:
        C.fail(str(path), "a file with at least one question", "no rows")
    present = list(rows[0])
    for ours in ("question", "answer"):
        if columns[ours] not in present:
            C.fail(str(path), f"a column {columns[ours]!r} (fields.{ours})", f"the columns {present}",
                   f"Map yours in `fields`, e.g. fields: {{{ours}: {present[0]!r}}}.")
    for ours in FIELDS[2:]:
        if fields and ours in fields and columns[ours] not in present:
            C.fail(str(path), f"a column {columns[ours]!r} (fields.{ours})", f"the columns {present}")
    first_line = 2 if builder == "csv" else 1
    out = [_question(row, columns, path, first_line + i, present) for i, row in enumerate(rows[:n])]
    return out


def _builder(path: Path, format: str | None) -> str:
    if format is not None:
        return FORMATS[C.check_choice(format, "format", tuple(FORMATS))]
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        C.fail("format", "given, or a file ending in .jsonl, .json, .csv or .parquet", f"{path.name}",
               "Give format: jsonl, csv or parquet.")
    return FORMATS[suffix]


def _columns(fields: dict[str, str] | None) -> dict[str, str]:
    fields = dict(fields or {})
    unknown = [k for k in fields if k not in FIELDS]
    if unknown:
        C.fail("fields", f"a mapping from {', '.join(FIELDS)} to your columns", f"the key {unknown[0]!r}",
               did_you_mean(unknown[0], FIELDS).strip())
    return {ours: fields.get(ours, ours) for ours in FIELDS}


def _check_json_lines(path: Path) -> None:
    """Every non-blank line a JSON object (the error names the line), unless the file is one JSON array."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as error:
            C.fail(f"{path}, line {number}", "one JSON object per line", f"{line[:60]!r} ({error})")
        if not isinstance(value, dict):
            C.fail(f"{path}, line {number}", "one JSON object per line", type(value).__name__)


def _read(path: Path, builder: str) -> list[dict]:
    try:
        import datasets
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Question files are read with datasets: pip install 'kdlens[lm]'.") from error
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar per read of a small local file is noise
    try:
        with tempfile.TemporaryDirectory(prefix="kdlens-questions-") as cache:
            try:
                table = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                              keep_in_memory=True)
            except Exception as error:  # datasets wraps the parser's own error; say which file
                C.fail(str(path), f"a readable {builder} file", f"{type(error).__name__}: {str(error)[:300]}")
            return table.to_list()
    finally:
        if shown:
            datasets.enable_progress_bars()


def _question(row: dict, columns: dict[str, str], path: Path, line: int, present: Sequence[str]) -> Question:
    where = f"{path}, line {line}"
    question, answer = row.get(columns["question"]), row.get(columns["answer"])
    for ours, value in (("question", question), ("answer", answer)):
        if value is None or not str(value).strip():
            C.fail(where, f"a {ours} (column {columns[ours]!r})", "none")
    answer, trace = str(answer), row.get(columns["trace"]) if columns["trace"] in present else None
    if "####" in answer:  # GSM8K: the solution, then "#### gold"
        solution, _, answer = answer.rpartition("####")
        trace = trace if trace is not None else solution.strip() or None
    difficulty = row.get(columns["difficulty"]) if columns["difficulty"] in present else None
    if difficulty is not None:
        try:
            difficulty = float(difficulty)
        except (TypeError, ValueError):
            C.fail(where, f"a number for difficulty (column {columns['difficulty']!r})", repr(difficulty))
    choices = row.get(columns["choices"]) if columns["choices"] in present else None
    if isinstance(choices, str):
        choices = [c.strip() for c in choices.split("|")]
    category = row.get(columns["category"]) if columns["category"] in present else None
    return Question(str(question), answer.strip(), None if trace is None else str(trace), difficulty,
                    None if category is None else str(category), None if choices is None else tuple(map(str, choices)),
                    line)
