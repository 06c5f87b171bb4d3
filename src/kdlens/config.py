"""Strict config models: YAML in, validated objects out, and a typo gets the key it was probably meant to be.

Every kdlens config class derives from :class:`StrictModel` (pydantic, ``extra="forbid"``, frozen). An unknown key
raises an error naming the key, the closest valid one, and the full list.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

Model = TypeVar("Model", bound=BaseModel)


def did_you_mean(value: Any, choices) -> str:
    """`` Did you mean 'x'?`` for the closest of ``choices``, or an empty string when none is close."""
    close = difflib.get_close_matches(str(value), sorted(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors with a suggestion, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields)
            for key in data:
                if key not in known:
                    raise ValueError(f"unknown key {key!r} in {cls.__name__}.{did_you_mean(key, known)} Valid keys: "
                                     f"{', '.join(sorted(known))}.")
        return data


def with_default_task(data: Any, task: str = "shapes") -> Any:
    """A config dict whose ``data`` section names no ``task`` gets ``task`` (for a ``mode="before"`` validator)."""
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and "task" not in data["data"]:
        return {**data, "data": {**data["data"], "task": task}}
    return data


MAX_EXPANDED_NODES = 100_000  # a config is a few hundred nodes; anchors that expand past this are an attack or a slip


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1}); keep one of them", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node, sizes: dict) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (aliases share nodes: counted per use)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = MAX_EXPANDED_NODES + 1  # a node that contains itself expands without end
    children = node.value if isinstance(node, yaml.SequenceNode) else \
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
    sizes[id(node)] = min(1 + sum(_expanded_size(child, sizes) for child in children), MAX_EXPANDED_NODES + 1)
    return sizes[id(node)]


def read_yaml(text: str, source: str = "config") -> Any:
    """Parse YAML text strictly: safe types only, no key twice in one mapping, anchors that expand to at most
    ``MAX_EXPANDED_NODES`` nodes; a syntax error (tabs included) is one ValueError naming ``source``, line and
    column."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        if _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise ValueError(f"Expected {source} to expand to at most {MAX_EXPANDED_NODES:,} YAML nodes, but its "
                             f"anchors and aliases (&name, *name) expand to more. Write the values out instead.")
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        hint = " YAML indents with spaces, not tabs." if "\\t" in problem or "\t" in problem else ""
        raise ValueError(f"Expected {source} to be valid YAML, but got: {problem}{where}.{hint}") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path, model: type[Model]) -> Model:
    """Read a YAML file (:func:`read_yaml`) and validate it as ``model``; errors name the file and the offending
    key path."""
    return validate(read_config_file(path), model, source=str(path))


def read_config_file(path: str | Path) -> Any:
    """The parsed contents (:func:`read_yaml`) of a UTF-8 YAML file; a missing file, a folder or bytes that are not
    UTF-8 are each one error naming the path."""
    path = Path(path)
    if not path.is_file():
        what = "which is a folder" if path.is_dir() else "no such file"
        raise FileNotFoundError(f"Expected `config` to be a YAML file, but got {path} ({what}).")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"Expected {path} to be UTF-8 text, but byte {data[error.start]:#04x} at offset "
                         f"{error.start} is not UTF-8. Save the config as UTF-8.") from None
    return read_yaml(text, source=str(path))


def validate(data: Any, model: type[Model], source: str = "config") -> Model:
    """Validate a dict as ``model``, turning pydantic's report into one readable ``ValueError``."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"]) or "(top level)"
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {message}")
        raise ValueError(f"Invalid {model.__name__} in {source}:\n" + "\n".join(lines)) from None


def dump_yaml(model: BaseModel) -> str:
    """The resolved config, every default filled in, as YAML (what a run saves beside its results)."""
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)


def named_recipe(name: str, recipes: dict, model: type[Model]) -> Model:
    """``recipes[name]()`` for a recipe's name, else the YAML file at path ``name`` validated as ``model`` (the labs'
    ``lab_recipe``); an unknown name that is no file is an error listing the names."""
    if name in recipes:
        return recipes[name]()
    if not Path(name).is_file():
        raise FileNotFoundError(f"Expected `lab_recipe` to be one of {', '.join(recipes)} or a YAML file, but got "
                                f"{name!r}.{did_you_mean(name, recipes)}")
    return load_yaml(name, model)
