"""The run directory: the only code that knows where a run keeps its files.

```
<run>/
  config.yaml        the resolved config
  manifest.json      layout version, versions, and per stage: its inputs' hash, done or not, a small summary
  models/<name>/     models the run built (safetensors + config.json)
  stages/<stage>/    figures.json, rows.jsonl, arrays.safetensors, and whatever a stage keeps while it works
                     (checkpoints, partial generations, parts/ of a sharded stage)
  results.json       what the report needs (written once, by the audit's results writer)
  report.html, summary.md
```

Every write is atomic (a temporary file, fsync, ``os.replace``): a kill at any instant leaves each file whole, old
or new. A run directory of an older layout is refused with the version that wrote it and how to re-run it. No torch
at import: the report reads run directories without it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdlens import io

if TYPE_CHECKING:
    import numpy as np
    import torch

LAYOUT = 2  # 1: stages' files were figures.json, examples.jsonl, maps.safetensors (kdlens 0.1 before the frame)
MANIFEST = "manifest.json"


class LayoutError(ValueError):
    """A run directory written by a kdlens whose layout this one does not read."""


@dataclass
class StageOutput:
    """What a stage computed, for :meth:`StageDir.write`.

    figures : JSON-ready dict of the stage's figures (``figures.json``)
    rows : one JSON-ready dict per example (``rows.jsonl``); NaN floats are written as null
    arrays : name -> tensor (``arrays.safetensors``), e.g. attribution maps
    summary : the few numbers recorded in ``manifest.json`` (what the stage display and the labs show)
    """

    figures: dict | None = None
    rows: list[dict] | None = None
    arrays: dict[str, torch.Tensor] | None = None
    summary: dict = field(default_factory=dict)


OUTPUTS = ("figures.json", "rows.jsonl", "arrays.safetensors")  # what StageDir.write writes, and the manifest keeps


class DamagedError(ValueError):
    """A file of a run directory is missing, cut short or changed since kdlens wrote it."""


def file_record(path: Path) -> dict:
    """``{"bytes", "sha256"}`` of a file: what the manifest keeps to tell later whether it is still the same."""
    return {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}


class StageDir:
    """One stage's folder: its readers, its one writer, and a line to say how far it has come.

    ``expected`` is what the manifest recorded of the files the finished stage wrote (name -> :func:`file_record`;
    None: no finished stage is recorded, and its files are read as they are); a reader refuses a file that no longer
    matches it, or that the stage did not write (:class:`DamagedError` naming the file and the stage to re-run).
    """

    def __init__(self, path: Path, name: str, say: Callable[[str], None] | None = None,
                 expected: dict[str, dict] | None = None) -> None:
        self.path, self.name = path, name
        self._say, self.expected = say, expected

    def file(self, name: str) -> Path:
        """A file of the stage's own (checkpoints, partial results), in its folder."""
        return self.path / name

    def damage(self) -> str | None:
        """What is wrong with the files the stage wrote (None: each is as the manifest recorded it)."""
        return next((f"{name} {problem}" for name in OUTPUTS if (problem := self._problem(name))), None)

    def _problem(self, name: str) -> str | None:
        """How output ``name`` differs from what the manifest recorded of it (None: it does not, or none recorded)."""
        if self.expected is None:
            return None
        record, path = self.expected.get(name), self.path / name
        if record is None:
            return "was not written by kdlens (the manifest records no such file)" if path.exists() else None
        if not path.is_file():
            return "is missing"
        return "was changed or cut short since kdlens wrote it" if file_record(path) != record else None

    def _damaged(self, name: str, what: str) -> DamagedError:
        return DamagedError(f"Expected stages/{self.name}/{name} in {self.path.parent.parent} to be the file kdlens "
                            f"wrote, but it {what}. Run the audit again (kdlens audit CONFIG): stage {self.name} is "
                            f"recomputed, the others load.")

    def _path(self, name: str) -> Path | None:
        """The path of output ``name`` when the stage wrote it (checked against the manifest), else None."""
        problem = self._problem(name)
        if problem is not None:
            raise self._damaged(name, problem)
        path = self.path / name
        return path if path.is_file() else None

    def figures(self) -> dict | None:
        """``figures.json``, or None when the stage did not write one."""
        path = self._path("figures.json")
        if path is None:
            return None
        try:
            return io.read_json(path)
        except ValueError as error:
            raise self._damaged("figures.json", f"is not valid JSON ({error})") from None

    def rows(self) -> list[dict]:
        """``rows.jsonl``, one dict per row (empty when the stage wrote none)."""
        path = self._path("rows.jsonl")
        if path is None:
            return []
        try:
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        except ValueError as error:
            raise self._damaged("rows.jsonl", f"is not valid JSON lines ({error})") from None

    def arrays(self) -> dict[str, torch.Tensor]:
        """``arrays.safetensors`` as tensors (empty when the stage wrote none)."""
        path = self._path("arrays.safetensors")
        try:
            return io.load_tensors(path) if path is not None else {}
        except Exception as error:  # safetensors raises its own error types on a torn file
            raise self._damaged("arrays.safetensors", f"is no readable safetensors file ({error})") from None

    def numpy_arrays(self) -> dict[str, np.ndarray]:
        """``arrays.safetensors`` as numpy arrays, without importing torch (the report's reader)."""
        from safetensors.numpy import load_file

        path = self._path("arrays.safetensors")
        try:
            return load_file(str(path)) if path is not None else {}
        except Exception as error:
            raise self._damaged("arrays.safetensors", f"is no readable safetensors file ({error})") from None

    def write(self, output: StageOutput) -> dict[str, dict]:
        """Write the stage's files atomically (arrays, then rows, then figures); returns each one's
        :func:`file_record` for the manifest."""
        if output.arrays:
            io.save_tensors(self.path / "arrays.safetensors", output.arrays)
        if output.rows is not None:
            lines = (json.dumps({k: _finite(v) for k, v in row.items()}) for row in output.rows)
            io.atomic_write_text(self.path / "rows.jsonl", "".join(f"{line}\n" for line in lines))
        if output.figures is not None:
            io.atomic_write_json(self.path / "figures.json", output.figures)
        written = [name for name, given in zip(OUTPUTS, (output.figures, output.rows, output.arrays), strict=True)
                   if given is not None and (name != "arrays.safetensors" or given)]
        return {name: file_record(self.path / name) for name in written}

    def say(self, text: str) -> None:
        """Show ``text`` on the stage's progress line (e.g. "seq_kd: 256/600 traces")."""
        if self._say is not None:
            self._say(text)

    def clear(self, keep: str | None = None) -> None:
        """Remove the stage's folder, or everything in it but its subfolder ``keep`` (e.g. ``parts/<hash>``)."""
        if keep is None or not (self.path / keep).is_dir():
            shutil.rmtree(self.path, ignore_errors=True)
            return
        kept = self.path.parent / f".{self.name}.kept"
        shutil.rmtree(kept, ignore_errors=True)
        (self.path / keep).replace(kept)
        shutil.rmtree(self.path, ignore_errors=True)
        (self.path / keep).parent.mkdir(parents=True, exist_ok=True)
        kept.replace(self.path / keep)


def _transient(name: str) -> bool:
    """A file another kdlens process is making in a run directory it is about to claim (a write check, the
    manifest's temporary file), which must not make the folder look foreign."""
    return name.startswith((".write-check-", f".{MANIFEST}.", ".ranks-"))


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


class RunDir:
    """A run directory (see the module docstring).

    Examples
    --------
    >>> import tempfile
    >>> run = RunDir(tempfile.mkdtemp())
    >>> files = run.stage("outputs").write(StageOutput(figures={"accuracy": 0.9}, rows=[{"correct": True}]))
    >>> sorted(files)  # each with its size and digest, for the manifest
    ['figures.json', 'rows.jsonl']
    >>> run.stage("outputs").figures(), run.stage("outputs").rows()
    ({'accuracy': 0.9}, [{'correct': True}])
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- the manifest -----------------------------------------------------------------------------------------
    def manifest(self) -> dict:
        """``manifest.json`` (a fresh one when there is none); an older layout raises :class:`LayoutError`, and so
        does a folder with files but no manifest (kdlens did not make it: nothing of it is overwritten)."""
        path = self.path / MANIFEST
        if not path.is_file():
            import kdlens

            self._check_foreign()
            return {"layout": LAYOUT, "versions": {"kdlens": kdlens.__version__, "torch": version("torch")},
                    "stages": {}}
        try:
            manifest = io.read_json(path)
        except ValueError as error:
            raise DamagedError(f"Expected {path} to be the manifest kdlens wrote, but it is not valid JSON ({error}). "
                               f"Remove the run directory to start over (rm -rf {self.path}).") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("stages", {}), dict):
            raise DamagedError(f"Expected {path} to be the manifest kdlens wrote, but it holds no stages mapping. "
                               f"Remove the run directory to start over (rm -rf {self.path}).")
        if manifest.get("layout") != LAYOUT:
            raise self.layout_error(manifest.get("versions", {}).get("kdlens", "an older kdlens"),
                                    manifest.get("layout", 1))
        return manifest

    def claim(self) -> None:
        """Make the folder a kdlens run directory (write its manifest) unless it is one: call before the first
        write. A path that is a file, or a folder holding files kdlens did not write, is refused."""
        if not (self.path / MANIFEST).is_file():
            self.save_manifest(self.manifest())

    def check_writable(self) -> None:
        """Raise unless kdlens may write here: the folder, or the nearest folder above it that exists, is writable
        (checked before any work, so a long run cannot fail at its first write)."""
        existing = next(p for p in (self.path, *self.path.parents) if p.exists())
        problem = None if os.access(existing, os.W_OK) else "is not writable by this user"
        if problem is None and existing.is_dir():  # permissions do not tell all (read-only mounts, /proc, quotas)
            made = []  # the folders this check makes (another process may be making the same ones now)
            try:
                for folder in [p for p in (self.path, *self.path.parents) if not p.exists()][::-1]:
                    try:
                        folder.mkdir()
                        made.append(folder)
                    except FileExistsError:
                        pass
                probe = self.path / f".write-check-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as error:
                problem = f"cannot hold a new file ({error.strerror or error})"
            finally:
                for folder in reversed(made):
                    try:
                        folder.rmdir()
                    except OSError:  # another process put files there meanwhile: its folder now
                        pass
        if problem is not None:
            raise LayoutError(f"Expected `run_dir` {self.path} to be writable, but {existing} {problem}. Choose a "
                              f"run_dir you can write to.")

    def _check_foreign(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise LayoutError(f"Expected `run_dir` to be a folder, but got {self.path}, which is a file. Choose "
                              f"another run_dir.")
        found = sorted(p.name for p in self.path.iterdir() if not _transient(p.name))[:5] if self.path.is_dir() else []
        if found:
            raise LayoutError(f"Expected `run_dir` to be a new folder or a kdlens run directory, but got {self.path}, "
                              f"which holds files kdlens did not write ({', '.join(found)}) and no {MANIFEST}. "
                              f"Choose another run_dir: kdlens writes only into folders it made.")

    def _recorded_stages(self) -> dict:
        """The stages the manifest records ({} before it is written), read through :meth:`manifest`'s checks."""
        return self.manifest()["stages"] if (self.path / MANIFEST).is_file() else {}

    def save_manifest(self, manifest: dict) -> None:
        io.atomic_write_json(self.path / MANIFEST, manifest)

    def layout_error(self, version: str, layout: int) -> LayoutError:
        return LayoutError(f"Expected `{self.path}` to be a run directory of layout {LAYOUT}, but got layout "
                           f"{layout} (written by kdlens {version}). Run it again into a new folder, or remove it "
                           f"first (rm -rf {self.path}) and run the same command: every stage is recomputed.")

    def check(self) -> None:
        """Raise :class:`DamagedError` naming every finished stage whose files are not what it wrote (missing, cut
        short, changed), and the command that recomputes them."""
        stages = self._recorded_stages()
        damaged = {name: problem for name in stages if (problem := self.stage(name).damage()) is not None}
        if damaged:
            listed = "; ".join(f"stage {name}: {problem}" for name, problem in damaged.items())
            which = "these stages are" if len(damaged) > 1 else "that stage is"
            raise DamagedError(f"Expected the run directory {self.path} to hold the files kdlens wrote, but {listed}. "
                               f"Run the audit again (kdlens audit CONFIG): {which} recomputed, the others load.")

    # --- files ------------------------------------------------------------------------------------------------
    def stage(self, name: str, say: Callable[[str], None] | None = None) -> StageDir:
        """Stage ``name``'s folder, checked on reading against the files the manifest recorded for it."""
        record = self._recorded_stages().get(name, {})
        return StageDir(self.path / "stages" / name, name, say, record.get("files") if record.get("done") else None)

    def model_dir(self, name: str) -> Path:
        """Where the run keeps model ``name`` it built (``save_pretrained`` / ``save_classifier`` layout)."""
        return self.path / "models" / name

    def publish_model(self, name: str, folder: str | Path) -> Path:
        """Move a model a stage saved in its own folder to ``models/<name>`` (one rename; a model already there,
        from an interrupted earlier publish, is replaced)."""
        target = self.model_dir(name)
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        Path(folder).replace(target)
        return target

    def write_config(self, text: str) -> None:
        io.atomic_write_text(self.path / "config.yaml", text)

    def results(self) -> dict | None:
        """``results.json``, or None when the run has not written it; a damaged one is an error naming it."""
        path = self.path / "results.json"
        if not path.is_file():
            return None
        try:
            return io.read_json(path)
        except ValueError as error:
            raise DamagedError(f"Expected {path} to be the results.json kdlens wrote, but it is not valid JSON "
                               f"({error}). Run the audit again (kdlens audit CONFIG): finished stages load and "
                               f"results.json is written anew.") from None

    def write_results(self, results: dict) -> None:
        io.atomic_write_json(self.path / "results.json", results, sort_keys=False)

    def write_report(self, name: str, text: str) -> Path:
        """A page of the report (``report.html``, ``summary.md``) beside the results."""
        return io.atomic_write_text(self.path / name, text)
