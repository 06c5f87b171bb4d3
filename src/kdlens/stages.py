"""Long work split into stages that are done once, and the one runner that runs them in a run directory.

A :class:`Stage` names what its result depends on (``inputs``, hashed) and how to compute it. The runner skips a
stage that finished on the same inputs, starts over one whose inputs changed (its folder is removed first:
half-trained checkpoints of other inputs cannot resume), and lets an unfinished stage on the same inputs resume
from whatever its folder holds. ``manifest.json`` is rewritten atomically before and after each stage, so a kill at
any instant leaves it readable and true; a stage that fails leaves the finished ones as they are.

Where the work is per example and its measures merge (sums, histograms, co-moments, counts), a stage is written as
``map(shard) -> state`` and ``reduce(states) -> StageOutput``: each shard's state (a dict of tensors, or of JSON
values) is saved under ``parts/`` as it is done, so an interrupted stage redoes only the shards it had not saved, and
the shards can run in other processes; ``reduce`` merges them in shard order.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdlens import io
from kdlens.progress import stage_display
from kdlens.rundir import RunDir, StageDir, StageOutput


@dataclass
class Stage:
    """One stage: ``compute(stage_dir)``, or ``map(shard, stage_dir)`` over ``shards`` then ``reduce(states,
    stage_dir)``; each returns a :class:`StageOutput` (``map``: a dict of tensors, the shard's partial state).

    name : unique in its run directory (a folder name: letters, digits, ``_``, ``.``, ``-``)
    inputs : JSON-serialisable description of everything the result depends on (hashed for the cache)
    """

    name: str
    inputs: Any
    compute: Callable[[StageDir], StageOutput] | None = None
    shards: Sequence[Any] = ()
    map: Callable[[Any, StageDir], dict] | None = None
    reduce: Callable[[list[dict], StageDir], StageOutput] | None = None

    def __post_init__(self) -> None:
        assert (self.compute is None) != (self.map is None and self.reduce is None), \
            f"stage {self.name}: give compute, or map and reduce"

    def run(self, stage_dir: StageDir) -> StageOutput:
        """Compute the stage in this process (every shard in turn, each saved as it is done)."""
        if self.compute is not None:
            return self.compute(stage_dir)
        states = [self._part(i, shard, stage_dir) for i, shard in enumerate(self.shards)]
        return self.reduce(states, stage_dir)

    def _part(self, i: int, shard: Any, stage_dir: StageDir) -> dict:
        """Shard ``i``'s state: saved by an earlier (interrupted) run, or mapped now and saved atomically."""
        tensors, values = stage_dir.file(f"parts/{i:05d}.safetensors"), stage_dir.file(f"parts/{i:05d}.json")
        if tensors.is_file():
            return io.load_tensors(tensors)
        if values.is_file():
            return io.read_json(values)
        state = self.map(shard, stage_dir)
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            io.save_tensors(tensors, state)
        else:
            io.atomic_write_json(values, state)
        return state


class StageRunner:
    """Runs stages in a run directory, with one progress line per stage (waiting, running, done in N s, cached,
    off).

    Examples
    --------
    >>> import tempfile
    >>> from kdlens.rundir import RunDir, StageOutput
    >>> run = RunDir(tempfile.mkdtemp())
    >>> square = Stage("square", {"x": 3}, compute=lambda d: StageOutput(figures={"y": 9}, summary={"y": 9}))
    >>> with StageRunner(run, ["square"], progress=False) as runner:
    ...     runner.run(square)["y"]
    9
    >>> failing = Stage("square", {"x": 3}, compute=lambda d: 1 / 0)  # done on these inputs: not run again
    >>> with StageRunner(run, ["square"], progress=False) as runner:
    ...     runner.run(failing)["y"], runner.status["square"]
    (9, 'cached')
    """

    def __init__(self, run_dir: RunDir, lines: Sequence[str] = (), progress: bool = True,
                 on_say: Callable[[str], None] | None = None) -> None:
        """``lines``: the progress lines, in order; ``on_say`` also hears what running stages say (a log)."""
        self.run_dir, self.lines, self.progress, self.on_say = run_dir, list(lines), progress, on_say
        self.manifest = run_dir.manifest()
        self.status: dict[str, str] = {}
        self._display = None
        self.redone: dict[str, str] = {}  # stage -> what was wrong with its files (so it was computed again)
        self._open: str | None = None  # the progress line stages now run on
        self._cached: list[bool] = []

    def __enter__(self) -> StageRunner:
        self._context = stage_display(self.progress, self.lines)
        self._display = self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._context.__exit__(*exc)

    def run(self, stage: Stage, line: str | None = None) -> dict:
        """The summary of ``stage``: recorded, or computed now and recorded (plus ``seconds`` it took).

        ``line`` is the progress line the stage shows on (default: its own name when that is a line, else none);
        stages that work for another (each model's generations for ``traces``) run under its line
        (:meth:`line`) and say how far they are there.
        """
        line = line if line is not None else stage.name if stage.name in self.lines else None
        if line is not None and line == self._open:
            summary, cached = self._run(stage, line)
            self._cached.append(cached)
        else:
            with self.line(line):
                summary, cached = self._run(stage, line)
                self._cached.append(cached)
        self.status[stage.name] = "cached" if cached else "done"
        return summary

    @contextmanager
    def line(self, name: str | None) -> Iterator[None]:
        """Show progress line ``name`` running while the block runs stages on it; then "cached" when every one of
        them was, else "done in N s"."""
        if name is None or self._display is None or name not in self.lines:
            self._open, self._cached = name, []
            try:
                yield
            finally:
                self._open = None
            return
        self._open, self._cached = name, []
        started = time.perf_counter()
        try:
            with self._display.stage(name) as status:
                yield
                cached = bool(self._cached) and all(self._cached)
                status["text"] = "cached" if cached else f"done in {time.perf_counter() - started:.1f} s"
                if name in self.redone:
                    status["text"] += f" (redone: {self.redone[name]})"
        finally:
            self._open = None

    def skip(self, name: str) -> None:
        """A stage turned off: its old files must not reach the results; its line says "off"."""
        if name in self.manifest["stages"]:
            del self.manifest["stages"][name]
            self.run_dir.save_manifest(self.manifest)
        self.run_dir.stage(name).clear()
        self.status[name] = "off"
        if self._display is not None and name in self.lines:
            with self._display.stage(name) as status:
                status["text"] = "off"

    def inputs_hash(self, name: str) -> str | None:
        """The recorded inputs' hash of stage ``name`` (what a stage built on it depends on)."""
        return self.manifest["stages"].get(name, {}).get("inputs")

    def _run(self, stage: Stage, line: str | None) -> tuple[dict, bool]:
        digest = io.stable_hash(stage.inputs)
        stage_dir = self.run_dir.stage(stage.name, say=self._sayer(line))
        record = self.manifest["stages"].get(stage.name, {})
        cached = bool(record.get("done")) and record.get("inputs") == digest
        damage = stage_dir.damage() if cached else None
        if damage is not None:  # its files are not what it wrote: computed again, never dropped
            self.redone[stage.name] = damage
            cached, record = False, {}
            stage_dir.clear()
        if record.get("inputs") != digest:
            if record:
                stage_dir.clear()
            self.manifest["stages"][stage.name] = {"inputs": digest, "done": False}
            self.run_dir.save_manifest(self.manifest)
        if not cached:
            io.remove_torn_writes(stage_dir.path)  # a process killed mid-write left them; they are never read
            started = time.perf_counter()
            output = stage.run(stage_dir)
            files = stage_dir.write(output)
            shutil.rmtree(stage_dir.file("parts"), ignore_errors=True)
            seconds = round(time.perf_counter() - started, 2)
            self.manifest["stages"][stage.name] = {**output.summary, "seconds": seconds, "inputs": digest,
                                                   "files": files, "done": True}
            self.run_dir.save_manifest(self.manifest)
        record = self.manifest["stages"][stage.name]
        return {k: v for k, v in record.items() if k not in ("inputs", "done", "files")}, cached

    def _sayer(self, line: str | None) -> Callable[[str], None]:
        def say(text: str) -> None:
            if line is not None and self._display is not None:
                self._display.say(line, text)
            if self.on_say is not None:
                self.on_say(text)

        return say


def run_stage(run_dir: str | Path | RunDir, stage: Stage, progress: bool = False) -> dict:
    """Run one stage in ``run_dir`` (cached like any other) and return its summary: for Python callers and tests
    that want one stage without an audit."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    with StageRunner(run_dir, [stage.name], progress) as runner:
        return runner.run(stage)
