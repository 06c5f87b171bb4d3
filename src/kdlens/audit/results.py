"""``results.json``: one writer for every audit kind.

The file is a contract users script against; ``SCHEMA_VERSION`` changes whenever a key is renamed or removed
(adding keys does not). Version 2 added ``kind`` (``"classifier"`` or ``"lm"``); the layout is documented in
``docs/results.md``.
"""

from __future__ import annotations

import kdlens
from kdlens.audit.kind import Headline
from kdlens.rundir import RunDir

SCHEMA_VERSION = 2
VERDICT_KEYS = ("verdict", "verdict_text", "risks", "score", "rank", "pareto", "failed_floors")


def write_results(run: RunDir, kind: str, headline: Headline, students: list[str], baselines: list[str],
                  card: dict) -> dict:
    """Copy each student's verdict, risks, score, rank, Pareto flag and failed floors from the scorecard into its
    metrics, then write ``results.json`` atomically: the versioned header with ``kind``, ``data``, ``teacher``,
    ``students`` (config order), ``baselines``, ``scorecard``, then the kind's own sections; returns what was
    written."""
    metrics = headline.metrics
    for name, entry in card["students"].items():
        metrics[name].update({k: entry[k] for k in VERDICT_KEYS})
    results = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "kdlens_version": kdlens.__version__,
        "data": headline.data,
        "teacher": headline.teacher,
        "students": {n: metrics[n] for n in students},
        "baselines": {n: metrics[n] for n in baselines},
        "scorecard": {k: v for k, v in card.items() if k != "students"},
        **headline.sections,
    }
    run.write_results(results)
    return results
