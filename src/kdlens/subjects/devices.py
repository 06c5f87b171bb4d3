"""Which devices a run may use: checked before any work, against the devices torch sees here."""

from __future__ import annotations

import torch

from kdlens.validation import fail


def visible_devices() -> list[str]:
    """The devices torch can use on this machine: ``cpu``, then ``cuda:0`` ... and ``mps`` where present."""
    out = ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def check_device(device: str, name: str = "device") -> str:
    """``device`` if torch can use it here, else one error listing the devices it can (before any model loads).

    >>> check_device("cpu")
    'cpu'
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        fail(name, f"a device name such as {', '.join(visible_devices())}", repr(device))
    visible = visible_devices()
    wanted = parsed.type if parsed.type in ("cpu", "mps") else f"{parsed.type}:{parsed.index or 0}"
    if wanted not in visible:
        fail(name, f"one of the devices this machine has ({', '.join(visible)})", repr(device),
             "Set device: cpu, or run where that accelerator is visible (kdlens env lists what torch sees).")
    return device


def resolve_device(device: str, local_rank: int = 0, ranks: int = 1) -> str:
    """The device this process runs its models on, checked (:func:`check_device`): ``auto`` is this rank's GPU
    (``cuda:<local_rank>``) when torch sees one, else the CPU; a bare ``cuda`` in a job of several ranks is this
    rank's GPU; anything else is itself.

    >>> resolve_device("cpu"), resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    ('cpu', True)
    """
    if device == "auto":
        count = torch.cuda.device_count()
        device = f"cuda:{local_rank % count}" if count else "cpu"
    elif device == "cuda" and ranks > 1:
        device = f"cuda:{local_rank}"
    return check_device(device)
