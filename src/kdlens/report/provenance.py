"""The language-model report's provenance section: per distilled student, the category shares by third of the trace
and by right or wrong final answer (bars with their bootstrap intervals), the sensitivity chart (every share as
alpha moves at the chosen beta, and as beta moves at the chosen alpha), and sample traces with each sentence
coloured by category (its three probabilities on hover), all from the ``provenance`` stage's files."""

from __future__ import annotations

from kdlens.report import plots
from kdlens.rundir import RunDir

MEANINGS = {"shared": "all three models agree", "teacher": "likelier under the teacher than the original student",
            "student": "likelier under the original student", "boosted": "likelier under the distilled model than "
            "under both", "other": "none of these"}


def _bars(groups: dict[str, dict], order: tuple[str, ...], categories: list[str], title: str) -> str | None:
    """Shares of each category (x) per group (bars, in ``order``), with intervals; None when no group has a
    sentence."""
    groups = {name: groups[name] for name in order if name in groups and groups[name]["n_sentences"]}
    if not groups:
        return None
    series = {name: [entry[k]["share"] for k in categories] for name, entry in groups.items()}
    intervals = {name: ([entry[k]["low"] for k in categories], [entry[k]["high"] for k in categories])
                 for name, entry in groups.items()}
    labels = {name: f"{name} ({entry['n_sentences']} sentences)" for name, entry in groups.items()}
    return plots.bar_chart(categories, {labels[n]: v for n, v in series.items()}, "share of sentences", title,
                           intervals={labels[n]: v for n, v in intervals.items()})


def _nearest(values: list[float], target: float) -> int:
    return min(range(len(values)), key=lambda i: abs(values[i] - target))


def _sensitivity(grid: dict, categories: list[str], alpha: float, beta: float, name: str) -> dict[str, str]:
    """Two line charts of the shares: over the alphas at the beta nearest ``beta``, over the betas at the alpha
    nearest ``alpha``."""
    alphas, betas, shares = grid["alphas"], grid["betas"], grid["shares"]
    if all(v is None for k in categories for row in shares[k] for v in row):
        return {}
    j, i = _nearest(betas, beta), _nearest(alphas, alpha)
    return {"alpha": plots.line_chart(alphas, {k: [row[j] for row in shares[k]] for k in categories}, "alpha",
                                      "share of sentences", f"{name}: shares as alpha moves (beta {betas[j]:g})"),
            "beta": plots.line_chart(betas, {k: shares[k][i] for k in categories}, "beta", "share of sentences",
                                     f"{name}: shares as beta moves (alpha {alphas[i]:g})")}


def section(run: RunDir, order: list[str], samples: int = 3) -> dict | None:
    """The section's variables: the stage's figures, per distilled student (in the audit's ``order``) its charts and
    ``samples`` traces with a right final answer and as many with a wrong one; None when the probe did not run."""
    figures = run.stage("provenance").figures()
    if figures is None:
        return None
    rows = run.stage("provenance").rows()
    students = {}
    for name in [n for n in order if n in figures["students"]]:
        entry = figures["students"][name]
        mine = [r for r in rows if r["model"] == name]
        picked = ([r for r in mine if r["answer_correct"]][:samples]
                  + [r for r in mine if not r["answer_correct"]][:samples])
        students[name] = {
            "position": _bars(entry["by_position"], ("first", "middle", "last"), figures["categories"],
                              f"{name}: by third of the trace"),
            "correctness": _bars(entry["by_correctness"], ("right", "wrong"), figures["categories"],
                                 f"{name}: by final answer"),
            "sensitivity": _sensitivity(entry["sensitivity"], figures["categories"], figures["alpha"],
                                        figures["beta"], name),
            "samples": sorted(picked, key=lambda r: r["index"])}
    return {"figures": figures, "students": students, "meanings": MEANINGS}  # the template walks `students`
