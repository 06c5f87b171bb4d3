"""Run an audit that kills itself with SIGKILL at one point of one stage, as a crash or the OOM killer would:
no ``finally`` block, no atexit handler, no flush runs.

    python -m tests.reliability.killed CONFIG.yaml STAGE WHEN [SHARE]

(SHARE, e.g. 1/3: the process is that ``--shard`` share of the audit.)

WHEN is one of
  start     as the stage begins, before any of its work
  shard     as its second shard (or chunk) begins: the first one is saved under ``parts/``
  part      while its first shard's file is being written (the temporary file exists, the rename has not happened)
  writing   while its first output file is being written (same)
  written   after every output file is written, before ``manifest.json`` says the stage is done

A run that reaches the end without passing that point exits 3, so a test knows the kill did not happen.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

WHEN = ("start", "shard", "part", "writing", "written")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(stage: str, when: str) -> None:
    """Patch the stage machinery so that this process dies at ``when`` in ``stage``."""
    from kdlens.rundir import StageDir
    from kdlens.stages import Parts, StageRunner

    if when == "start":
        begin = StageRunner._begin

        def begin_and_die(self, stage_, stage_dir, digest):
            cached = begin(self, stage_, stage_dir, digest)
            if stage_.name == stage:
                die()
            return cached

        StageRunner._begin = begin_and_die
    elif when == "shard":
        compute, calls = Parts.compute, []

        def compute_and_die(self, shard):
            if self.stage.name == stage:
                assert len(self.stage.shards) > 1, f"{stage} has no second shard"
                calls.append(shard)
                if len(calls) == 2:
                    die()
            return compute(self, shard)

        Parts.compute = compute_and_die
    elif when in ("part", "writing"):
        replace = os.replace

        def replace_and_die(source, target):
            folder = Path(target).parent
            if ((folder.parent.name, folder.parent.parent.name) == ("parts", stage) if when == "part"
                    else (folder.name, folder.parent.name) == (stage, "stages")):
                die()
            return replace(source, target)

        os.replace = replace_and_die
    else:
        write = StageDir.write

        def write_and_die(self, output):
            files = write(self, output)
            if self.name == stage:
                die()
            return files

        StageDir.write = write_and_die


def main(config: str, stage: str, when: str, share: str | None = None) -> int:
    assert when in WHEN, when
    arm(stage, when)
    from kdlens import audit

    if share is None:
        audit.run(config, progress=False)
    else:
        audit.run_share(config, share, progress=False)
    return 3


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
