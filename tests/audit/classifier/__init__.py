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


def written_across_shardings(build, files, tmp_path, monkeypatch) -> dict[int, tuple]:
    """What ``build()``'s stage writes (``files(run_dir)``) on the tests' 22 examples in batches of 4, with shards of 1
    batch (6 shards, the last of 2 examples), of 3 batches run as 2 shares (2 shards), and of every batch (1): keyed
    by the shard size in batches."""
    from kdlens.audit.classifier import outputs

    written = {}
    for shard_batches, shares, n_shards in ((1, 1, 6), (3, 2, 2), (1000, 1, 1)):
        monkeypatch.setattr(outputs, "SHARD_BATCHES", shard_batches)
        monkeypatch.setattr("kdlens.stages.MIN_SHARDS", 1)  # the chunk size alone sets the shards
        stage = build()
        assert len(stage.shards) == n_shards
        run_dir = tmp_path / f"{shard_batches}"
        run_stage(run_dir, stage) if shares == 1 else run_in_shares(run_dir, stage, shares)
        written[shard_batches] = files(run_dir)
    return written
