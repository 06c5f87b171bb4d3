"""Do two audits say the same thing? Compare two run directories' results.json (and their stages' figures.json).

    python benchmarks/compare_results.py BEFORE_RUN_DIR AFTER_RUN_DIR [--tolerance 1e-9]

Every count, string and boolean must be equal and every float within ``--tolerance`` (absolute); timings
(``seconds``) and the fields that name the writer (``schema_version``, ``kind``, ``kdlens_version``) are left out.
Stage figures are compared for each stage both directories have (``stages/<stage>/figures.json``; a layout-1
gallery kept its figures in ``gallery.json``). Prints one line per difference and a summary; exits 1 when any.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

IGNORED = {"seconds", "schema_version", "kind", "kdlens_version"}


def differences(before, after, where: str = "", tolerance: float = 1e-9) -> list[str]:
    """Every place where ``after`` differs from ``before`` (dicts by key, lists by position)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            if key in IGNORED:
                continue
            if key not in after or key not in before:
                out.append(f"{where}.{key}: only in {'before' if key in before else 'after'}")
                continue
            out += differences(before[key], after[key], f"{where}.{key}", tolerance)
        return out
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{where}: {len(before)} items before, {len(after)} after"]
        return [d for i, (b, a) in enumerate(zip(before, after, strict=True))
                for d in differences(b, a, f"{where}[{i}]", tolerance)]
    if isinstance(before, float) or isinstance(after, float):
        if isinstance(before, bool) or isinstance(after, bool) or not isinstance(before, int | float) \
                or not isinstance(after, int | float):
            return [f"{where}: {before!r} before, {after!r} after"]
        if math.isclose(before, after, rel_tol=0, abs_tol=tolerance):
            return []
        return [f"{where}: {before!r} before, {after!r} after (differ by {abs(before - after):.3g})"]
    return [] if before == after else [f"{where}: {before!r} before, {after!r} after"]


def stage_figures(run_dir: Path) -> dict[str, Path]:
    """Stage name -> its figures file (layout 2 ``figures.json``; a layout-1 gallery's ``gallery.json``)."""
    out = {}
    for folder in sorted((run_dir / "stages").glob("*")):
        for name in ("figures.json", "gallery.json"):
            if (folder / name).is_file():
                out[folder.name] = folder / name
    return out


def compare(before: Path, after: Path, tolerance: float) -> tuple[list[str], int]:
    """All differences between two run directories, and how many values were compared."""
    found, compared = [], 0
    pairs = [("results.json", before / "results.json", after / "results.json")]
    figures_before, figures_after = stage_figures(before), stage_figures(after)
    pairs += [(f"stages/{s}", figures_before[s], figures_after[s]) for s in figures_before if s in figures_after]
    for label, a, b in pairs:
        old, new = json.loads(a.read_text()), json.loads(b.read_text())
        compared += _leaves(old)
        found += [f"{label}{d}" for d in differences(old, new, "", tolerance)]
    return found, compared


def _leaves(value) -> int:
    if isinstance(value, dict):
        return sum(_leaves(v) for k, v in value.items() if k not in IGNORED)
    if isinstance(value, list):
        return sum(_leaves(v) for v in value)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--tolerance", type=float, default=1e-9)
    args = parser.parse_args(argv)
    found, compared = compare(args.before, args.after, args.tolerance)
    for line in found:
        print(line)
    stages = sorted(set(stage_figures(args.before)) & set(stage_figures(args.after)))
    print(f"{args.before} vs {args.after}: {compared} values in results.json and {len(stages)} stages' figures "
          f"({', '.join(stages)}); {len(found)} differ (tolerance {args.tolerance:g})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
