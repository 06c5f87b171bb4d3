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
