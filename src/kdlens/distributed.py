"""Which share of a run this process does: the whole of it, one rank of a ``torchrun`` / ``accelerate launch`` job,
or one ``--shard i/n`` share that a job scheduler started with no collective at all.

A sharded stage's work is split by shard index (:meth:`World.share`: shard ``j`` belongs to rank ``j mod n``), every
process writes the states of its shards as files under the stage (``parts/``), and one process reduces them. Ranks
of a launched job talk only to agree (a gloo process group, also on GPU machines: no tensor ever travels through it,
the results travel as files in the run directory, which every rank must see). Each agreement also carries each
rank's failure, so an exception in one rank ends every rank with that rank's message instead of a hang.

>>> World().who, World().share(list(range(5)))
('one process', [0, 1, 2, 3, 4])
>>> World.shard("1/3").share(list(range(7)))
[1, 4]
"""

from __future__ import annotations

import datetime
import os
import re
import socket
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
TIMEOUT_HOURS = float(os.environ.get("KDLENS_DIST_TIMEOUT_HOURS", 6))  # longest wait for another rank's work


class RankFailed(RuntimeError):
    """Another rank of this job failed; the message is that rank's."""


@dataclass(frozen=True)
class World:
    """This process's place in the run.

    rank, size : this process is share ``rank`` of ``size`` (0 of 1: the whole run)
    local_rank : its index on its machine (which GPU it uses)
    collective : True for the ranks of a launched job (torch.distributed)
    detached : True for a ``--shard`` share (no collective; it leaves every reduce to a later run)
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    collective: bool = False
    detached: bool = False

    @classmethod
    def shard(cls, spec: str) -> World:
        """The share ``"i/n"`` of ``kdlens audit CONFIG --shard i/n`` (0 <= i < n)."""
        found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
        if found is None or not int(found[1]) < int(found[2]):
            raise ValueError(f"Expected `--shard` as i/n with 0 <= i < n (e.g. 0/3, 1/3, 2/3), but got {spec!r}.")
        return cls(rank=int(found[1]), size=int(found[2]), detached=True)

    @classmethod
    def from_environment(cls) -> World:
        """One process, or this rank of the job ``torchrun`` / ``accelerate launch`` started (``WORLD_SIZE`` > 1):
        then the gloo process group is joined here unless the caller did already."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(hours=TIMEOUT_HOURS))
        return cls(rank=dist.get_rank(), size=dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")), collective=True)

    @property
    def sharded(self) -> bool:
        """A ``--shard`` share: it maps its shards and leaves every reduce (and the manifest) to a later run."""
        return self.detached

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files beyond its shards' (manifest, stages, results)."""
        return self.rank == 0 and not self.sharded

    @property
    def who(self) -> str:
        """How the manifest names this process: "one process", "rank 1/2", "shard 2/3"."""
        if self.detached:
            return f"shard {self.rank}/{self.size}"
        return f"rank {self.rank}/{self.size}" if self.collective else "one process"

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's items: every ``size``-th from its ``rank`` (deterministic, no padding, no duplicates)."""
        return list(items[self.rank::self.size])

    def first(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0; every rank returns its result (small and picklable), or raises rank 0's error."""
        if not self.collective:
            return work()
        import torch.distributed as dist

        error, box = None, [None]
        if self.rank == 0:
            try:
                box = [(None, work())]
            except BaseException as raised:
                error, box = raised, [(describe(raised), None)]
        dist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        failure, result = box[0]
        if failure is not None:
            raise RankFailed(f"rank 0 of {self.size} failed: {failure}")
        return result

    def each(self, work: Callable[[], T]) -> T:
        """``work()`` on every rank; then every rank raises when any failed (its own error, or the first failed
        rank's message)."""
        if not self.collective:
            return work()
        import torch.distributed as dist

        error, result = None, None
        try:
            result = work()
        except BaseException as raised:
            error = raised
        failures: list[Any] = [None] * self.size
        dist.all_gather_object(failures, None if error is None else describe(error))
        if error is not None:
            raise error
        failed = [(rank, message) for rank, message in enumerate(failures) if message is not None]
        if failed:
            rank, message = failed[0]
            raise RankFailed(f"rank {rank} of {self.size} failed: {message}")
        return result

    def in_turn(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0, then on the others once it succeeded (the lab is built once, then loaded)."""
        if not self.collective:
            return work()
        box: list = []
        self.first(lambda: box.append(work()))
        if self.rank != 0:
            return self.each(work)
        self.each(lambda: None)
        return box[0]


def leave() -> None:
    """Leave the process group :meth:`World.from_environment` joined (nothing when there is none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def describe(error: BaseException) -> str:
    """One line naming an error for the other ranks: its type, message, host and where it was raised."""
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    at = f" (at {os.path.basename(where.filename)}:{where.lineno})" if where else ""
    return f"{type(error).__name__}: {error} [on {socket.gethostname()}, pid {os.getpid()}{at}]"
