from pathlib import Path

from kdlens.distributed import World
from kdlens.rundir import RunDir
from kdlens.stages import StageRunner, run_stage


def run_alone(build):
    """``build``'s stage run on its own: ``run_alone(build)(run_dir, *args)`` is its summary (cached like any)."""
    return lambda run_dir, *args, **kwargs: run_stage(run_dir, build(*args, **kwargs))


def map_in_shares(run_dir, stage, shares: int) -> list[Path]:
    """Run a sharded stage as ``shares`` (>= 2) ``--shard i/n`` shares, each mapping its shards and saving their
    states under ``parts/``, as other processes would; returns the saved parts' files."""
    assert shares >= 2, "one share is the whole run"
    RunDir(run_dir).claim()  # the audit writes the manifest before the shares start
    for rank in range(shares):
        world = World.shard(f"{rank}/{shares}")
        with StageRunner(RunDir(run_dir), [stage.name], progress=False, world=world) as share:
            share.run(stage)
        assert share.status[stage.name] == "mapped"
    return sorted(p for p in (Path(run_dir) / "stages" / stage.name / "parts").rglob("*") if p.is_file())


def run_in_shares(run_dir, stage, shares: int) -> dict:
    """:func:`map_in_shares`, then the run that reduces the saved parts. That run maps nothing (asserted): every
    state it reduces is read back from its saved part. Returns the stage's summary."""
    map_in_shares(run_dir, stage, shares)
    with StageRunner(RunDir(run_dir), [stage.name], progress=False) as runner:
        summary = runner.run(stage)
    assert runner.mapped[stage.name] == 0, "the reducing run mapped shards itself: not every part was saved"
    return summary
