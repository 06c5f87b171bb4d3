"""Long work split into stages that are done once: the manifest of a run directory.

``manifest.json`` records, for each stage, the hash of its inputs, whether it finished, and the small summary it
returned (figures, seconds). :meth:`Stages.run` skips a stage that finished on the same inputs, starts over one
whose inputs changed (its folder is removed first: half-trained checkpoints of other inputs cannot resume), and
lets an unfinished stage on the same inputs resume from whatever its folder holds. The manifest is rewritten
atomically before and after each stage, so a kill at any instant leaves it readable and true.

The lab (models) and the audit (probes) both keep their run directories this way.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import kdlens
from kdlens import io

MANIFEST = "manifest.json"


class Stages:
    """The stages of one run directory.

    Examples
    --------
    >>> import tempfile
    >>> stages = Stages(tempfile.mkdtemp())
    >>> stages.run("square", {"x": 3}, lambda: {"y": 9})["y"]
    9
    >>> stages.run("square", {"x": 3}, lambda: 1 / 0)["y"]  # done on these inputs: not run again
    9
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        self.manifest = io.read_json(path) if path.is_file() else {
            "stages": {}, "versions": {"kdlens": kdlens.__version__, "torch": torch.__version__}}

    def _save(self) -> None:
        io.atomic_write_json(self.root / MANIFEST, self.manifest)

    def run(self, name: str, inputs: Any, compute: Callable[[], dict], folder: str | Path | None = None) -> dict:
        """The summary of stage ``name``: recorded, or computed now by ``compute()`` and recorded.

        Parameters
        ----------
        name : stage name, unique in this run directory
        inputs : JSON-serialisable description of everything the stage's result depends on
        compute : builds the stage (writing its files under ``folder``) and returns a JSON-serialisable summary
        folder : the stage's files (default ``root / name``); removed when the inputs changed

        Returns
        -------
        dict: the summary, plus ``seconds`` it took to compute.
        """
        digest = io.stable_hash(inputs)
        record = self.manifest["stages"].get(name, {})
        if record.get("inputs") != digest:
            if record:
                shutil.rmtree(Path(folder) if folder is not None else self.root / name, ignore_errors=True)
            self.manifest["stages"][name] = {"inputs": digest, "done": False}
            self._save()
        if not self.manifest["stages"][name]["done"]:
            started = time.perf_counter()
            summary = compute()
            self.manifest["stages"][name] = {**summary, "seconds": round(time.perf_counter() - started, 2),
                                             "inputs": digest, "done": True}
            self._save()
        return {k: v for k, v in self.manifest["stages"][name].items() if k not in ("inputs", "done")}
