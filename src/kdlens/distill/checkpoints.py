"""Training checkpoints that survive a kill at any instant.

A checkpoint is a folder ``checkpoints/step-<N>/`` holding each trained module as ``<name>.safetensors`` (the
student, a strategy's trainable parts) and the optimiser as safetensors, plus ``state.json`` (loop position, RNG
state, history). ``checkpoints/latest.json`` is rewritten atomically only after the folder is complete, so it always
names a whole checkpoint; older folders are removed after the pointer moves. ``loop.py`` writes and reads them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from kdlens import io

POINTER = "latest.json"


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        rest["state"][str(index)] = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                rest["state"][str(index)][name] = value
    return tensors, rest


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {int(i): dict(values) for i, values in rest["state"].items()}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save(directory: Path, step: int, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
         state: dict[str, Any]) -> Path:
    """Write checkpoint ``step`` under ``directory`` (``modules`` by name) and point ``latest.json`` at it."""
    folder = directory / f"step-{step:08d}"
    if folder.exists():
        shutil.rmtree(folder)
    for name, module in modules.items():
        io.save_tensors(folder / f"{name}.safetensors", module.state_dict())
    opt_tensors, opt_rest = _flatten_optimizer(optimizer.state_dict())
    io.save_tensors(folder / "optimizer.safetensors", opt_tensors)
    io.save_tensors(folder / "rng.safetensors", {"torch": torch.get_rng_state()})
    io.atomic_write_json(folder / "state.json", {**state, "optimizer": opt_rest})
    io.atomic_write_json(directory / POINTER, {"folder": folder.name, "step": step})
    for old in directory.glob("step-*"):
        if old.is_dir() and old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def latest(directory: Path) -> Path | None:
    """The folder ``latest.json`` names, or None when there is no complete checkpoint."""
    pointer = directory / POINTER
    if not pointer.is_file():
        return None
    folder = directory / io.read_json(pointer)["folder"]
    return folder if (folder / "state.json").is_file() else None


def restore(folder: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load a checkpoint into the given objects (built the same way) and return its loop state."""
    device = next(p for module in modules.values() for p in module.parameters()).device
    for name, module in modules.items():
        module.load_state_dict(io.load_tensors(folder / f"{name}.safetensors", device))
    state = io.read_json(folder / "state.json")
    optimizer.load_state_dict(_unflatten_optimizer(io.load_tensors(folder / "optimizer.safetensors", device),
                                                   state.pop("optimizer")))
    torch.set_rng_state(io.load_tensors(folder / "rng.safetensors")["torch"])
    return state
