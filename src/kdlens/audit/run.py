"""``kdlens audit CONFIG``: one runner for every audit kind.

:func:`run` validates the config, lets its kind load and check data and models (before any long work), runs the
kind's stages through one :class:`~kdlens.stages.StageRunner`, then scores the students and writes ``results.json``.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from kdlens import io
from kdlens.audit.kind import AuditKind, kind_of
from kdlens.audit.results import write_results
from kdlens.audit.scorecard import scorecard
from kdlens.config import dump_yaml, read_config_file, validate
from kdlens.distributed import World
from kdlens.rundir import RunDir
from kdlens.stages import ShareDone, StageRunner
from kdlens.subjects.devices import resolve_device


def as_config(config: Any) -> Any:
    """The config object of ``config`` (itself, a dict of its fields, or a YAML file's path), of its kind's type:
    an :class:`~kdlens.audit.AuditConfig` (classifiers) or an :class:`~kdlens.audit.LMAuditConfig` (``data: {task:
    reasoning}``)."""
    kind = kind_of(config)
    if isinstance(config, kind.config_type):
        return config
    if isinstance(config, dict):
        return validate(config, kind.config_type)
    raw = read_config_file(config)
    return validate(raw, kind_of(raw).config_type, source=str(config))


def run(config: Any, teacher: Any = None, students: dict | None = None, baselines: dict | None = None,
        progress: bool = True, world: World | None = None, merge_only: bool = False) -> dict:
    """Audit a teacher against its students as ``config`` describes; returns what ``results.json`` holds.

    Parameters
    ----------
    config : AuditConfig, LMAuditConfig, a dict of its fields, or the path of a YAML file (the kind follows
        ``data.task``: ``reasoning`` is a language-model audit, anything else a classifier audit)
    teacher, students, baselines : models that take the place of the config's sources (for Python callers):
        ``nn.Module`` classifiers, or :class:`~kdlens.subjects.LanguageModel` objects (no baselines)
    progress : show the lab's training bars and one line per stage
    world : this process's share (default: the ``torchrun`` / ``accelerate launch`` rank it is, else the whole run)
    merge_only : compute no shard here: reduce the sharded stages whose shards are all saved, run the one-process
        stages, and raise :class:`~kdlens.stages.SharesMissing` at the first sharded stage that still misses shards
        (``kdlens audit --merge``)

    Returns
    -------
    dict: the results (``<run_dir>/results.json``; layout in ``docs/results.md``), on every rank.
    """
    world = world if world is not None else World.from_environment()
    config = as_config(config)
    kind: AuditKind = kind_of(config)
    device = resolve_device(config.device, world.local_rank, world.size if world.collective else 1)
    run_dir = RunDir(config.run_dir)
    world.first(lambda: refuse_early(run_dir))
    shown = progress and world.rank == 0
    audit = world.in_turn(lambda: kind.prepare(config, teacher, students, baselines, shown, device))
    world.first(lambda: (run_dir.claim(), run_dir.write_config(dump_yaml(audit.config))))
    check_shared(run_dir, world)
    with StageRunner(run_dir, kind.lines, shown, world=world, merge_only=merge_only) as runner:
        kind.run_stages(audit, runner)

    def results() -> dict:
        headline = kind.headline(audit, run_dir)
        card = scorecard(headline.teacher, {n: headline.metrics[n] for n in audit.students}, audit.config.selection,
                         kind.wording(audit))
        return write_results(run_dir, kind.name, headline, audit.students, audit.baselines, card)

    return world.first(results)


def run_share(config: Any, share: str, progress: bool = True) -> dict:
    """Do share ``share`` (``"i/n"``) of an audit and return what it did (``kdlens audit CONFIG --shard i/n``).

    Each sharded stage's shards are split by index among the ``n`` shares; this process maps its own (those not
    saved yet) of every sharded stage it reaches, and stops at the first stage that needs every share's results.
    A later ``kdlens audit CONFIG`` (or ``--merge``) reduces them and runs the rest. Shares need no collective:
    they may run at once or one after another, on any machines that see the run directory.

    Returns
    -------
    dict: ``share``; ``mapped`` (stage -> shards this process mapped); ``waits_for`` (the stage that needs every
    share, None when the share reached the end).
    """
    world = World.shard(share)
    config = as_config(config)
    kind: AuditKind = kind_of(config)
    device = resolve_device(config.device, 0, 1)
    run_dir = RunDir(config.run_dir)
    refuse_early(run_dir)
    audit = kind.prepare(config, None, None, None, progress, device)
    run_dir.claim()
    waits_for = None
    with StageRunner(run_dir, kind.lines, progress, world=world) as runner:
        try:
            kind.run_stages(audit, runner)
        except ShareDone as done:
            waits_for = done.stage
    return {"share": world.who, "mapped": dict(runner.mapped), "waits_for": waits_for}


def refuse_early(run_dir: RunDir) -> None:
    """Raise, before any work, for a run directory of an older layout, a folder kdlens did not make, or one this
    user cannot write to."""
    run_dir.manifest()
    run_dir.check_writable()


def check_shared(run_dir: RunDir, world: World) -> None:
    """Raise on every rank unless every rank sees the run directory rank 0 writes (results travel as files)."""
    if not world.collective:
        return
    mark = run_dir.path / f".ranks-{os.environ.get('MASTER_PORT', '0')}-{world.size}"
    world.first(lambda: io.atomic_write_text(mark, socket.gethostname()))

    def look() -> None:
        if not mark.is_file():
            raise ValueError(f"Expected every rank to see the run directory {run_dir.path}, but rank {world.rank} on "
                             f"{socket.gethostname()} does not see the file rank 0 wrote there. Put run_dir on a "
                             f"filesystem every machine of the job shares (NFS, Lustre, ...).")

    world.each(look)
    world.first(lambda: mark.unlink(missing_ok=True))
