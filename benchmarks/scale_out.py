"""Per-example cost and memory per rank of an audit, in one process and in ``torchrun`` ranks: the figures behind
the README's "Scaling out" table.

    .venv/bin/python benchmarks/scale_out.py                                   # the real example, 24 questions
    .venv/bin/python benchmarks/scale_out.py --config my_audit.yaml --n 200 --ranks 1 2 4

Each run writes to a fresh temporary run directory (nothing cached). The stage seconds are the manifest's (rank 0's,
from its first shard to the written reduce); the peak resident memory of every process is the kernel's high-water
mark (``VmHWM``), sampled until it exits. One process runs with torch's default threads (all cores) and with one
thread, as each torchrun rank does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def peak_kib(pid: int) -> int | None:
    try:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM"))
        return int(line.split()[1])
    except (OSError, StopIteration):
        return None


def run(config: Path, ranks: int, threads: int | None) -> tuple[float, dict[int, int]]:
    """Wall seconds of ``kdlens audit`` and the peak memory (KiB) of each python process that ran the audit."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] if ranks > 1 else []
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *launcher, "-m", "kdlens", "audit", str(config), "--quiet",
                                "--no-report"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    peaks: dict[int, int] = {}
    while process.poll() is None:
        for pid in descendants(process.pid):
            if is_audit(pid) and (kib := peak_kib(pid)) is not None:
                peaks[pid] = max(peaks.get(pid, 0), kib)
        time.sleep(0.5)
    if process.returncode != 0:
        raise SystemExit(f"kdlens audit failed ({process.returncode}):\n{process.stderr.read()[-3000:]}")
    return time.perf_counter() - started, peaks


def is_audit(pid: int) -> bool:
    """Whether process ``pid`` runs the audit itself (one process, or a rank; not torchrun's agent)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kdlens" in command and b"torch.distributed.run" not in command


def largest_difference(a, b) -> float:
    """The largest relative difference between two JSON documents' numbers (inf where anything else differs)."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return max((largest_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return max((largest_difference(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    if isinstance(a, float) and isinstance(b, float) and not isinstance(a, bool):
        return 0.0 if a == b else abs(a - b) / max(abs(a), abs(b))
    return 0.0 if a == b else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "examples/real_lm/audit.yaml")
    parser.add_argument("--n", type=int, default=24, help="questions (data.n)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-default-threads", action="store_true", help="skip the 1-process run on all cores")
    args = parser.parse_args()
    from kdlens.io import read_json

    base = yaml.safe_load(args.config.read_text())
    runs = [*(() if args.no_default_threads else ((1, None),)), (1, 1), *((r, 1) for r in args.ranks if r > 1)]
    table, results = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for ranks, threads in runs:
            run_dir = Path(tmp) / f"r{ranks}t{threads}"
            config = Path(tmp) / f"r{ranks}t{threads}.yaml"
            config.write_text(yaml.safe_dump({**base, "run_dir": str(run_dir),
                                              "data": {**base["data"], "n": args.n}}))
            wall, peaks = run(config, ranks, threads)
            stages = read_json(run_dir / "manifest.json")["stages"]
            if threads == 1:
                results[ranks] = read_json(run_dir / "results.json")
            label = f"{ranks} rank{'s' if ranks > 1 else ''}" if ranks > 1 else \
                f"1 process, {threads or os.cpu_count()} thread{'s' if (threads or os.cpu_count()) > 1 else ''}"
            table[label] = (wall, {name: record["seconds"] for name, record in stages.items()}, peaks)
            print(f"{label}: {wall:.1f} s wall; peak memory per process "
                  f"{', '.join(f'{kib / 2**20:.2f} GiB' for kib in sorted(peaks.values(), reverse=True))}",
                  flush=True)
    for ranks in sorted(results)[1:]:
        worst = largest_difference(results[1], results[ranks])
        print(f"results.json of {ranks} ranks against 1 process on 1 thread: largest relative difference {worst:.1e} "
              f"({'equal to 1e-9' if worst <= 1e-9 else 'DIFFERENT'})")
    names = list(next(iter(table.values()))[1])
    print(f"\n| stage (s per question, {args.n} questions) | " + " | ".join(table) + " |")
    print("|---|" + "---|" * len(table))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{t[1][name] / args.n:.3f}" for t in table.values()) + " |")
    print("| wall, whole command (s) | " + " | ".join(f"{t[0]:.0f}" for t in table.values()) + " |")
    print("| peak memory per rank (GiB) | " + " | ".join(
        f"{max(t[2].values()) / 2**20:.2f}" for t in table.values()) + " |")


if __name__ == "__main__":
    main()
