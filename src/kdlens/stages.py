"""Long work split into stages that are done once, and the one runner that runs them in a run directory.

A :class:`Stage` names what its result depends on (``inputs``, hashed) and how to compute it. The runner skips a
stage that finished on the same inputs, starts over one whose inputs changed (its folder is removed first:
half-trained checkpoints of other inputs cannot resume), and lets an unfinished stage on the same inputs resume
from whatever its folder holds. ``manifest.json`` is rewritten atomically before and after each stage, so a kill at
any instant leaves it readable and true; a stage that fails leaves the finished ones as they are.

Where the work is per example and its measures merge (sums, histograms, co-moments, counts), a stage is written as
``map(shard) -> state`` and ``reduce(states) -> StageOutput`` over :class:`Shard` s, runs of examples that tile the
stage's examples. Each shard's state (a dict of tensors, or of JSON values) is saved under
``parts/<inputs hash>/`` as it is done, with the examples it covers and who computed it, so an interrupted stage
redoes only the shards it had not saved, and the shards can run in other processes (:mod:`kdlens.distributed`):
each process maps its share, one reduces them all in shard order and records in the manifest which examples each
part covered and who computed it.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdlens import io
from kdlens.distributed import World
from kdlens.progress import stage_display
from kdlens.rundir import RunDir, StageDir, StageOutput


@dataclass(frozen=True)
class Shard:
    """Examples ``[start, stop)`` of a sharded stage's work; ``split`` names which of its example sets ("" when the
    stage has one)."""

    start: int
    stop: int
    split: str = ""


def spans(n: int, step: int, split: str = "") -> list[Shard]:
    """Runs of ``step`` examples covering ``n`` (the last one shorter): ``spans(10, 4)`` covers 0-4, 4-8, 8-10.

    >>> [(s.start, s.stop) for s in spans(10, 4)]
    [(0, 4), (4, 8), (8, 10)]
    """
    return [Shard(start, min(start + step, n), split) for start in range(0, n, step)]


MIN_SHARDS = 16  # where a stage has that many batches: up to 16 processes share it evenly, and a kill loses little


def batch_spans(n: int, batch_size: int, most_batches: int, split: str = "") -> list[Shard]:
    """Shards of whole batches covering ``n`` examples: as few batches each as make ``MIN_SHARDS`` shards, and
    at most ``most_batches`` (fewer part files on large sets). The same in every process: it depends on ``n`` and
    ``batch_size`` alone, and a shard never splits a batch.

    >>> [(s.start, s.stop) for s in batch_spans(10, 2, 4)], len(batch_spans(10_000, 16, 4))
    ([(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)], 157)
    """
    per = max(1, min(most_batches, math.ceil(math.ceil(n / batch_size) / MIN_SHARDS)))
    return spans(n, per * batch_size, split)


def tiling_problem(shards: Sequence[Shard], examples: int | dict[str, int]) -> str | None:
    """What keeps ``shards`` from covering every example once (None: they do). ``examples``: how many there are,
    or split -> how many."""
    sizes = examples if isinstance(examples, dict) else {"": examples}
    for split, n in sizes.items():
        runs = sorted((s.start, s.stop) for s in shards if s.split == split)
        reached = 0
        for start, stop in runs:
            if start != reached or stop <= start:
                what = "overlap" if start < reached else "leave a gap" if start > reached else "hold an empty run"
                return f"shards{f' of split {split!r}' if split else ''} {what} at example {min(start, reached)}"
            reached = stop
        if reached != n:
            return f"shards{f' of split {split!r}' if split else ''} cover {reached} of {n} examples"
    strays = sorted({s.split for s in shards} - set(sizes))
    return f"shards name splits the stage does not have: {strays}" if strays else None


@dataclass
class Stage:
    """One stage: ``compute(stage_dir)``, or ``map(shard, stage_dir)`` over ``shards`` then ``reduce(states,
    stage_dir)``; each returns a :class:`StageOutput` (``map``: a dict of tensors or of JSON values, the shard's
    partial state).

    name : unique in its run directory (a folder name: letters, digits, ``_``, ``.``, ``-``)
    inputs : JSON-serialisable description of everything the result depends on (hashed for the cache)
    shards, examples : the :class:`Shard` s, which must cover the ``examples`` (a count, or split -> count) once each
    """

    name: str
    inputs: Any
    compute: Callable[[StageDir], StageOutput] | None = None
    shards: Sequence[Shard] = ()
    map: Callable[[Shard, StageDir], dict] | None = None
    reduce: Callable[[list[dict], StageDir], StageOutput] | None = None
    examples: int | dict[str, int] | None = None

    def __post_init__(self) -> None:
        assert (self.compute is None) != (self.map is None and self.reduce is None), \
            f"stage {self.name}: give compute, or map and reduce"
        if self.map is not None:
            assert self.examples is not None, f"stage {self.name}: a sharded stage names its examples"
            problem = tiling_problem(self.shards, self.examples)
            assert problem is None, f"stage {self.name}: its {problem}"


class Parts:
    """A sharded stage's saved shard states, ``parts/<inputs hash>/<shard>.json`` or ``.safetensors``, each with
    the examples it covers and who computed it (a file whose record is not its shard's is never read)."""

    def __init__(self, stage: Stage, stage_dir: StageDir, digest: str, who: str) -> None:
        self.stage, self.stage_dir, self.who = stage, stage_dir, who
        self.folder = stage_dir.file(f"parts/{digest}")
        self.splits = list(stage.examples) if isinstance(stage.examples, dict) else [""]
        self.mapped = 0  # shards this process mapped

    def name(self, shard: Shard) -> str:
        where = f"{self.splits.index(shard.split)}-" if shard.split else ""
        return f"{where}{shard.start:07d}-{shard.stop:07d}"

    def saved(self, shard: Shard) -> tuple[str, Path, dict | None] | None:
        """Who computed the saved state of ``shard``, its file, and (a JSON part) the file's content; None when
        none is saved, or the file's record is not this shard's. A safetensors part's tensors are not read."""
        record, name = record_of(shard), self.name(shard)
        tensors, values = self.folder / f"{name}.safetensors", self.folder / f"{name}.json"
        try:
            if tensors.is_file():
                from safetensors import safe_open

                with safe_open(str(tensors), framework="pt") as f:
                    meta = f.metadata() or {}
                if json.loads(meta.get("kdlens.shard", "null")) == record:
                    return meta.get("kdlens.by", "?"), tensors, None
            if values.is_file():
                saved = io.read_json(values)
                if isinstance(saved, dict) and saved.get("shard") == record and "state" in saved:
                    return saved.get("by", "?"), values, saved
        except Exception:  # a file damaged after it was written is computed again, never read
            return None
        return None

    def load(self, shard: Shard) -> tuple[dict, str] | None:
        """The saved state of ``shard`` and who computed it; None when none is saved (or the file is not one)."""
        found = self.saved(shard)
        if found is None:
            return None
        by, path, content = found
        if content is not None:
            return content["state"], by
        try:
            return io.load_tensors(path), by
        except Exception:  # torn or changed since its record was read: computed again
            return None

    def compute(self, shard: Shard) -> dict:
        """Map ``shard`` now and save its state atomically."""
        state = self.stage.map(shard, self.stage_dir)
        self.mapped += 1
        record, name = record_of(shard), self.name(shard)
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            io.save_tensors(self.folder / f"{name}.safetensors", state,
                            metadata={"kdlens.shard": json.dumps(record), "kdlens.by": self.who})
        else:
            io.atomic_write_json(self.folder / f"{name}.json", {"shard": record, "by": self.who, "state": state})
        return state

    def map_share(self, world: World, still_wanted: Callable[[], bool] = lambda: True) -> None:
        """Map this process's share of the shards that are not saved yet (stopping early once ``still_wanted()``
        says another process finished the stage)."""
        for shard in world.share(self.stage.shards):
            if self.saved(shard) is None:
                if not still_wanted():
                    return
                self.compute(shard)

    def gather(self) -> tuple[list[dict], list[dict]]:
        """Every shard's state in shard order (mapping here any that no process saved) and the manifest's record
        of what each covered and who computed it. Each part read is its planned shard's (its record says so), and
        the planned shards cover every example once (checked when the stage was made)."""
        states, covered = [], []
        for shard in self.stage.shards:
            found = self.load(shard)
            state, by = found if found is not None else (self.compute(shard), self.who)
            states.append(state)
            covered.append({"examples": [shard.start, shard.stop], **({"split": shard.split} if shard.split else {}),
                            "by": by})
        return states, covered


def record_of(shard: Shard) -> list:
    """What a part records of the shard it holds: ``[split, start, stop]``."""
    return [shard.split, shard.start, shard.stop]


class SharesMissing(ValueError):
    """``--merge`` reached a sharded stage whose shards are not all saved: the shares have more to do."""

    def __init__(self, stage: str, missing: int, total: int) -> None:
        super().__init__(f"Expected every shard of stage {stage} to be saved before the merge, but {missing} of "
                         f"{total} are missing. Run the shares (kdlens audit CONFIG --shard i/n, for each i), then "
                         f"kdlens audit CONFIG --merge again; or run kdlens audit CONFIG to compute them here.")
        self.stage, self.missing, self.total = stage, missing, total


class ShareDone(Exception):  # noqa: N818 (not an error: a --shard share stops here)
    """A ``--shard`` share reached a stage that needs every share's results: the rest is the merging run's."""

    def __init__(self, stage: str, mapped: list[str]) -> None:
        super().__init__(stage, mapped)
        self.stage, self.mapped = stage, mapped


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
                 on_say: Callable[[str], None] | None = None, world: World | None = None,
                 merge_only: bool = False) -> None:
        """``lines``: the progress lines, in order; ``on_say`` also hears what running stages say (a log);
        ``world``: this process's share of the run (default: all of it); ``merge_only``: map no shard here
        (a sharded stage missing shards raises :class:`SharesMissing`)."""
        self.run_dir, self.lines, self.progress, self.on_say = run_dir, list(lines), progress, on_say
        self.world = world if world is not None else World()
        self.merge_only = merge_only
        self.manifest = run_dir.manifest()
        self.status: dict[str, str] = {}
        self._display = None
        self.redone: dict[str, str] = {}  # stage -> what was wrong with its files (so it was computed again)
        self._open: str | None = None  # the progress line stages now run on
        self._cached: list[bool] = []
        self.mapped: dict[str, int] = {}  # sharded stage -> shards this process mapped

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
        if self.status.get(stage.name) != "mapped":
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
                took = f"{time.perf_counter() - started:.1f} s"
                status["text"] = "cached" if cached else f"share mapped in {took}" if self.world.sharded \
                    else f"done in {took}"
                if name in self.redone:
                    status["text"] += f" (redone: {self.redone[name]})"
        finally:
            self._open = None

    def skip(self, name: str) -> None:
        """A stage turned off: its old files must not reach the results; its line says "off"."""
        def forget() -> None:
            if name in self.manifest["stages"]:
                del self.manifest["stages"][name]
                self.run_dir.save_manifest(self.manifest)
            self.run_dir.stage(name).clear()

        if not self.world.sharded:
            self.world.first(forget)
            self.manifest = self.run_dir.manifest()
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
        if self.world.sharded:
            return self._share(stage, stage_dir, digest)
        cached = self.world.first(lambda: self._begin(stage, stage_dir, digest))
        if not cached:
            started = time.perf_counter()
            parts = Parts(stage, stage_dir, digest, self.world.who) if stage.map is not None else None
            if parts is not None and self.merge_only:
                missing = [shard for shard in stage.shards if parts.saved(shard) is None]
                if missing:
                    raise SharesMissing(stage.name, len(missing), len(stage.shards))
            if parts is not None and self.world.collective:
                self.world.each(lambda: parts.map_share(self.world))
            self.world.first(lambda: self._finish(stage, stage_dir, digest, started, parts))
            if parts is not None:
                self.mapped[stage.name] = parts.mapped
        if not self.world.writes:
            self.manifest = self.run_dir.manifest()
        return summary_of(self.manifest["stages"][stage.name]), cached

    def _begin(self, stage: Stage, stage_dir: StageDir, digest: str) -> bool:
        """Whether the stage is done on these inputs with its files intact; if not, its folder is made ready (old
        inputs' files removed, torn writes deleted) and the manifest says it has begun."""
        record = self.manifest["stages"].get(stage.name, {})
        cached = bool(record.get("done")) and record.get("inputs") == digest
        damage = stage_dir.damage() if cached else None
        if damage is not None:  # its files are not what it wrote: computed again, never dropped
            self.redone[stage.name] = damage
            cached, record = False, {}
            stage_dir.clear(keep=f"parts/{digest}")
        if record.get("inputs") != digest:
            if record:
                stage_dir.clear(keep=f"parts/{digest}")  # the shards of these inputs stay (done by --shard shares)
            self.manifest["stages"][stage.name] = {"inputs": digest, "done": False}
            self.run_dir.save_manifest(self.manifest)
        if not cached:
            io.remove_torn_writes(stage_dir.path, keep="parts")  # killed mid-write; never read
        return cached

    def _finish(self, stage: Stage, stage_dir: StageDir, digest: str, started: float,
                parts: Parts | None = None) -> None:
        """Compute the stage (a sharded one: reduce its parts, mapping here any still missing), write its files and
        record it done in the manifest."""
        covered = None
        if parts is None:
            output = stage.compute(stage_dir)
        else:
            states, covered = parts.gather()
            output = stage.reduce(states, stage_dir)
        files = stage_dir.write(output)
        shutil.rmtree(stage_dir.file("parts"), ignore_errors=True)
        seconds = round(time.perf_counter() - started, 2)
        self.manifest["stages"][stage.name] = {**output.summary, "seconds": seconds, "inputs": digest,
                                               "files": files, "done": True,
                                               **({"shards": covered} if covered is not None else {})}
        self.run_dir.save_manifest(self.manifest)

    def _share(self, stage: Stage, stage_dir: StageDir, digest: str) -> tuple[dict, bool]:
        """A ``--shard`` share's part of a stage: nothing when it is done, its shards when it is sharded; a stage
        that is neither needs every share's results, so the share stops there (:class:`ShareDone`)."""
        def done() -> bool:
            record = self.run_dir.manifest()["stages"].get(stage.name, {})
            return (bool(record.get("done")) and record.get("inputs") == digest
                    and self.run_dir.stage(stage.name).damage() is None)

        if done():
            return summary_of(self.run_dir.manifest()["stages"][stage.name]), True
        if stage.map is None:
            raise ShareDone(stage.name, [name for name, status in self.status.items() if status == "mapped"])
        parts = Parts(stage, stage_dir, digest, self.world.who)
        parts.map_share(self.world, still_wanted=lambda: not done())
        self.mapped[stage.name] = parts.mapped
        self.status[stage.name] = "mapped"
        return {}, False

    def _sayer(self, line: str | None) -> Callable[[str], None]:
        def say(text: str) -> None:
            if line is not None and self._display is not None:
                self._display.say(line, text)
            if self.on_say is not None:
                self.on_say(text)

        return say


def summary_of(record: dict) -> dict:
    """A stage's manifest record without the runner's bookkeeping: what :meth:`StageRunner.run` returns."""
    return {k: v for k, v in record.items() if k not in ("inputs", "done", "files", "shards")}


def run_stage(run_dir: str | Path | RunDir, stage: Stage, progress: bool = False) -> dict:
    """Run one stage in ``run_dir`` (cached like any other) and return its summary: for Python callers and tests
    that want one stage without an audit."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    with StageRunner(run_dir, [stage.name], progress) as runner:
        return runner.run(stage)
