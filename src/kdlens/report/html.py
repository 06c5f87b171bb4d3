"""``report.html`` and ``summary.md`` from a run directory's result files alone (no model, no torch).

:func:`render` reads ``results.json``, draws the sections of its audit kind (``results["kind"]``: classifier or lm)
with every plot inline (SVG, PNG data URIs), and writes a page that makes no network request. All text goes through
Jinja's autoescape, model generations and user-chosen names included.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import jinja2

from kdlens.report import classifier, lm
from kdlens.report.tables import fmt
from kdlens.rundir import LayoutError, RunDir

TEMPLATES = Path(__file__).parent / "templates"
SCHEMA_VERSION = 2  # the results.json this report reads
PAGES: dict[str, ModuleType] = {"classifier": classifier, "lm": lm}  # audit kind -> its sections


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def summary_markdown(results: dict) -> str:
    """``summary.md``: the verdicts and the headline table, for a pull request or a lab notebook."""
    card, columns = results["scorecard"], PAGES[results["kind"]].COLUMNS

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["# kdlens audit", ""]
    warning = (card.get("teacher_reference") or {}).get("text")
    if warning:
        lines += [f"**{cell(warning)}**", ""]
    chosen, by_accuracy = card.get("chosen"), card.get("chosen_by_accuracy")
    if chosen is None:
        lines.append(f"**{cell(card.get('no_choice') or 'No student passes the selection rule floors.')}**")
    else:
        lines.append(f"**Chosen: {cell(chosen)}.**" + (f" Accuracy alone would have chosen {cell(by_accuracy)}."
                                                         if by_accuracy and by_accuracy != chosen else ""))
    lines += ["", "| model | verdict | " + " | ".join(cell(h) for _, h, _ in columns) + " |",
              "|---|---|" + "---:|" * len(columns)]
    lines.append("| teacher | | " + " | ".join(fmt(results["teacher"].get(k), f) for k, _, f in columns) + " |")
    for name, s in results["students"].items():
        lines.append(f"| {cell(name)} | {s['verdict']} | " + " | ".join(fmt(s.get(k), f) for k, _, f in columns)
                     + " |")
    lines += ["", "## Verdicts", ""]
    lines += [f"- **{cell(name)}**: {cell(s['verdict_text'])}" for name, s in results["students"].items()]
    return "\n".join(lines) + "\n"


def read_results(run: RunDir) -> dict:
    """``results.json`` of ``run``; missing, or written by an older kdlens, is an error saying what to run."""
    results = run.results()
    if results is None:
        raise FileNotFoundError(f"Expected `run_dir` to hold results.json, but got {run.path} without it. Run "
                                f"`kdlens audit CONFIG` first (its run_dir is the folder to report on).")
    version, kind = results.get("schema_version", 1), results.get("kind")
    if version < SCHEMA_VERSION:
        raise LayoutError(f"Expected results.json of schema {SCHEMA_VERSION}, but got schema {version} in {run.path} "
                          f"(written by kdlens {results.get('kdlens_version', 'before 0.2')}). Run the audit again: "
                          f"kdlens audit CONFIG with run_dir a new folder (or remove this one first: rm -rf "
                          f"{run.path}); every stage is recomputed.")
    if version > SCHEMA_VERSION or kind not in PAGES:
        raise LayoutError(f"Expected results.json of schema {SCHEMA_VERSION} with kind one of {', '.join(PAGES)}, "
                          f"but got schema {version} with kind {kind!r} in {run.path}. Update kdlens to report it.")
    return results


def render(run_dir: str | Path, per_kind: int = 4) -> Path:
    """Write ``report.html`` and ``summary.md`` into ``run_dir`` from its result files; returns the HTML's path.

    Parameters
    ----------
    run_dir : a run directory written by ``kdlens audit`` (needs ``results.json``)
    per_kind : gallery examples per student and kind (classifiers: right for wrong reasons, disagreement, cue flip)
    """
    run = RunDir(run_dir)
    results = read_results(run)
    run.check()  # a stage whose files are not what the audit wrote is named, never drawn
    page = PAGES[results["kind"]]
    html = _environment().get_template(page.TEMPLATE).render(**page.context(run, results, per_kind))
    path = run.write_report("report.html", html)
    run.write_report("summary.md", summary_markdown(results))
    return path
