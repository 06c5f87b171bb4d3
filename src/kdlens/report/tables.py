"""The report's headline table: one row per model, formatted cells (every audit kind's page and summary.md)."""

from __future__ import annotations


def fmt(value, kind: str) -> str:
    """A metric as its cell shows it: ``pct`` (a share as a percentage with one decimal) or ``f<k>`` (k decimals);
    an en dash where the value is missing."""
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    return f"{value:.{kind[1]}f}"


def table_rows(results: dict, columns: tuple) -> list[dict]:
    """The teacher, each student (with its verdict) and each baseline, with one formatted cell per ``(key, header,
    format)`` column."""
    rows = [{"name": "teacher", "role": "teacher", "verdict": None,
             "cells": [fmt(results["teacher"].get(k), f) for k, _, f in columns]}]
    rows += [{"name": name, "role": "student", "verdict": s["verdict"],
              "cells": [fmt(s.get(k), f) for k, _, f in columns]} for name, s in results["students"].items()]
    rows += [{"name": name, "role": "baseline", "verdict": None, "cells": [fmt(s.get(k), f) for k, _, f in columns]}
             for name, s in results.get("baselines", {}).items()]
    return rows
