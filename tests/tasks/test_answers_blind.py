"""The answer reader on 50 model outputs written blind (by someone who had not seen the extractors): the share it
reads as a careful person would, under the audit's default rules (``answer: {extract: auto, compare: auto}``).

Measured 36 / 50. The misses are kept, not tuned away: numbers written as words ("twelve edges"), yes / no
answers, an option's text without the options given, a mixed number ("2 1/4"), the answer first and other numbers
after it, scientific notation, a range, a truncated output, and an output that runs on into a question of its own
(the audit cuts those at "Question:"). This test guards against the share falling."""

import json
from pathlib import Path

from kdlens.audit.lm.config import AnswerSettings
from kdlens.audit.lm.data import examples
from kdlens.tasks import free_text as F
from kdlens.tasks.questions import Question

OUTPUTS = Path(__file__).with_name("answer_outputs_blind.jsonl")


def read_right(row: dict) -> bool:
    gold = row["expected"] if row["expected"] is not None else row["gold"]
    choices = tuple("ABCDE") if row["kind"] == "choice" else None
    check = F.check_trace(examples([Question("q", str(gold), choices=choices)], AnswerSettings())[0], row["output"])
    return check.answer_text is None if row["expected"] is None else check.answer_correct


def test_the_default_rules_read_at_least_the_measured_share_of_blind_outputs():
    rows = [json.loads(line) for line in OUTPUTS.read_text().splitlines()]
    assert len(rows) == 50
    right = sum(map(read_right, rows))
    assert right >= 36, f"{right} / 50 read right"
