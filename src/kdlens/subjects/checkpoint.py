"""Save and load classifiers as safetensors weights plus a JSON description of how to rebuild them.

A checkpoint directory holds ``model.safetensors`` and ``config.json`` (``{"architecture": "package.module:Class",
"kwargs": {...}, ...}``). Loading imports the architecture by its dotted path; outside the ``kdlens`` package that
runs code named by a file, so it needs ``trust_remote_code=True``, as in Hugging Face.
"""

from __future__ import annotations

import importlib
import os
import reprlib
import sys
from pathlib import Path
from typing import Any

from torch import nn

from kdlens import io
from kdlens import validation as C

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def architecture_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def save_classifier(model: nn.Module, directory: str | Path, kwargs: dict[str, Any], **metadata: Any) -> Path:
    """Write ``model``'s weights and the recipe to rebuild it (``type(model)(**kwargs)``) into ``directory``."""
    _check_module(model)
    _check_kwargs(kwargs)
    directory = Path(directory)
    io.save_tensors(directory / WEIGHTS, model.state_dict())
    io.atomic_write_json(directory / CONFIG, {"architecture": architecture_path(type(model)), "kwargs": kwargs,
                                              **metadata})
    return directory


def _import(module_name: str, trust_remote_code: bool):
    """Import a module; your own code (trust_remote_code) may also live in the working directory, as it may for
    ``python -m`` (the ``kdlens`` command does not put the working directory on sys.path by itself)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if not trust_remote_code or error.name != module_name.split(".")[0]:
            raise
    sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(os.getcwd())


_TRUSTED: set[str] = set()  # "package.module:Class" paths built without trust_remote_code


def register_architecture(cls: type) -> str:
    """Let checkpoints name ``cls`` (an ``nn.Module`` class) without ``trust_remote_code``; returns its path. The
    lab registers its models; a package does so from its ``kdlens.sources`` entry point."""
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        C.fail("cls", "an nn.Module class", repr(cls), error=TypeError)
    _TRUSTED.add(architecture_path(cls))
    return architecture_path(cls)


def trusted_architectures() -> list[str]:
    """The architectures a checkpoint may name with ``trust_remote_code=False`` (every plugin loaded first)."""
    from kdlens.subjects.sources import load_plugins

    load_plugins()
    return sorted(_TRUSTED)


def build_architecture(architecture: str, kwargs: dict[str, Any], trust_remote_code: bool = False) -> nn.Module:
    """Instantiate ``"package.module:Class"`` with ``kwargs``.

    With ``trust_remote_code=False`` (the default) only a registered architecture (:func:`trusted_architectures`,
    e.g. the lab's ``kdlens.lab.cnn:SmallCNN``) is built: a path read from a checkpoint's ``config.json`` can name no
    other callable, not even one inside kdlens. With ``True`` any importable class or factory is called (your own
    code; the working directory is searched too). Either way the result must be an ``nn.Module``.
    """
    if not isinstance(architecture, str) or ":" not in architecture:
        C.fail("architecture", 'a "package.module:Class" path', repr(architecture))
    _check_kwargs(kwargs)
    trust_remote_code = C.check_bool(trust_remote_code, "trust_remote_code")
    if not trust_remote_code and architecture not in trusted_architectures():
        C.fail("architecture", f"a registered kdlens architecture ({', '.join(trusted_architectures())}), or "
               f"trust_remote_code=True", repr(architecture),
               "Loading it imports and runs that code; pass trust_remote_code=True only if you trust its source.")
    if not trust_remote_code:
        _check_plain_values(kwargs)
    module_name, _, attr = architecture.partition(":")
    try:
        cls = getattr(_import(module_name, trust_remote_code), attr)
    except (ImportError, AttributeError) as error:
        C.fail("architecture", "an importable class", f"{architecture!r} ({error})")
    model = cls(**kwargs)
    if not isinstance(model, nn.Module):
        C.fail("architecture", "a class or factory that returns an nn.Module", f"{architecture!r}, which returned "
               f"{type(model).__name__}", error=TypeError)
    return model


def load_weights(model: nn.Module, path: str | Path, device: str = "cpu") -> nn.Module:
    """Load a safetensors state dict into ``model`` strictly: every key present, none unexpected, shapes equal."""
    _check_module(model)
    path = Path(path)
    if not path.is_file():
        C.fail("weights", "a safetensors file", f"{path} (no such file)", error=FileNotFoundError)
    state = io.load_tensors(path, device=device)
    expected = model.state_dict()
    for key, value in state.items():
        if key in expected and expected[key].shape != value.shape:
            C.fail(str(path), f"weights for {type(model).__name__}",
                   f"{key} of shape {tuple(value.shape)} where the model has {tuple(expected[key].shape)}",
                   "Build the architecture with the arguments it was trained with (kwargs).")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        C.fail(str(path), f"weights for {type(model).__name__}",
               f"missing {missing[:5]} and unexpected {unexpected[:5]}",
               "Check that the file was saved from this architecture (model.state_dict()).")
    return model.to(device)


def load_classifier(directory: str | Path, trust_remote_code: bool = False, device: str = "cpu") -> nn.Module:
    """Rebuild and load a classifier saved by :func:`save_classifier` (weights via safetensors, never pickle)."""
    directory = Path(directory)
    for name in (WEIGHTS, CONFIG):
        if not (directory / name).is_file():
            C.fail("directory", f"a checkpoint folder with {WEIGHTS} and {CONFIG}", f"{directory} without {name}",
                   error=FileNotFoundError)
    config = io.read_json(directory / CONFIG)
    model = build_architecture(config["architecture"], config.get("kwargs", {}), trust_remote_code)
    return load_weights(model, directory / WEIGHTS, device)


def _check_module(model) -> None:
    if not isinstance(model, nn.Module):
        C.fail("model", "a torch.nn.Module", type(model).__name__, error=TypeError)


def _check_kwargs(kwargs) -> None:
    if not isinstance(kwargs, dict) or not all(isinstance(key, str) for key in kwargs):
        C.fail("kwargs", "a dict of the architecture's keyword arguments (str keys)", reprlib.repr(kwargs),
               "Pass {} for an architecture without arguments.", error=TypeError)


def _check_plain_values(kwargs: dict, where: str = "kwargs") -> None:
    """Untrusted kwargs hold numbers, strings, booleans, nulls and lists of them: a mapping could be read as another
    source (an architecture and its own kwargs) by whatever receives it."""
    for key, value in kwargs.items():
        name = f"{where}[{key!r}]"
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if isinstance(item, list | tuple):
                _check_plain_values(dict(enumerate(item)), name)
            elif not (item is None or isinstance(item, bool | int | float | str)):
                C.fail(name, "a number, string, boolean, null or a list of them (trust_remote_code is off)",
                       f"a {type(item).__name__}", "A model folder's kwargs cannot hold mappings or objects unless "
                       "you trust it: pass trust_remote_code=True only if you trust its source.", error=TypeError)
