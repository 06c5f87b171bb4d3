"""Files that must never be half-written: atomic writes, stable hashes, and safetensors checkpoints.

This module sits below every layer, so measures, distill, audit and report all write results the same way: to a
temporary file in the target's folder, fsync, then ``os.replace`` onto the target, which is atomic on POSIX and
Windows. torch and safetensors are imported by the functions that handle tensors only, so the report (which never
imports torch) writes its files through here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path``, named ``.<name>.<random>.tmp`` (what :func:`remove_torn_writes`
    finds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def remove_torn_writes(folder: str | os.PathLike, keep: str | None = None) -> list[Path]:
    """Delete the temporary files that atomic writes under ``folder`` left when their process was killed before
    the rename (nothing else removes them), except under its subfolder ``keep`` (where other processes may be
    writing now); returns what was deleted."""
    folder = Path(folder)
    torn = sorted(folder.rglob(".*.tmp")) if folder.is_dir() else []
    if keep is not None:
        torn = [path for path in torn if not path.is_relative_to(folder / keep)]
    for path in torn:
        path.unlink(missing_ok=True)
    return torn


@contextmanager
def exclusive(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on file ``path`` (made if missing) for the block: processes that build the same thing
    (a lab, from several ``--shard`` shares at once) take turns, and the later ones find it built. POSIX ``flock``;
    where there is none (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (readers see the old file or the new one, never a torn one)."""
    path = Path(path)
    fd, tmp = _temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, sort_keys: bool = True) -> Path:
    """JSON with a trailing newline, keys sorted unless ``sort_keys=False`` (then in insertion order, e.g. models
    in the order the config names them); NaN and inf are rejected (they are not JSON)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hex digest of a JSON-serialisable object, independent of dict order and of the Python process."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """Atomically write a safetensors file (contiguous CPU copies; shared storage is cloned)."""
    from safetensors.torch import save_file

    path = Path(path)
    fd, tmp = _temporary(path)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file (no pickle: nothing in it can run code)."""
    from safetensors.torch import load_file

    return load_file(str(path), device=str(device))


def tensors_digest(tensors: dict[str, torch.Tensor] | list[torch.Tensor], length: int = 12) -> str:
    """Hex digest of tensors' names, shapes, dtypes and bytes: identifies a model's weights or a data set."""
    import torch

    items = tensors.items() if isinstance(tensors, dict) else enumerate(tensors)
    digest = hashlib.sha256()
    for name, tensor in items:
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:length]
