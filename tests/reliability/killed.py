"""Run an audit that kills itself with SIGKILL at one point of one stage, as a crash or the OOM killer would:
no ``finally`` block, no atexit handler, no flush runs.

    python -m tests.reliability.killed CONFIG.yaml STAGE WHEN

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
    from kdlens.stages import Stage

    if when in ("start", "shard"):
        run = Stage.run

        def run_and_die(self, stage_dir):
            if self.name == stage and when == "start":
                die()
            if self.name == stage:
                assert self.map is not None and len(self.shards) > 1, f"{stage} has no second shard"
                mapped, calls = self.map, []

                def map_and_die(shard, folder):
                    calls.append(shard)
                    if len(calls) == 2:
                        die()
                    return mapped(shard, folder)

                self.map = map_and_die
            return run(self, stage_dir)

        Stage.run = run_and_die
    elif when in ("part", "writing"):
        replace = os.replace

        def replace_and_die(source, target):
            folder = Path(target).parent
            if (folder.name, folder.parent.name) == (("parts", stage) if when == "part" else (stage, "stages")):
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


def main(config: str, stage: str, when: str) -> int:
    assert when in WHEN, when
    arm(stage, when)
    from kdlens import audit

    audit.run(config, progress=False)
    return 3


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
