"""The import graph of ``src/kdlens`` follows DESIGN.md's layers: a package imports only from layers below it (and
the bottom layer's modules from the ones before them), no module-level imports go round in a circle, and no private
name or module is imported from another module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "kdlens"
# DESIGN.md "Layers"; layer 0 in the order its modules may import one another
BOTTOM = ("validation", "io", "config", "progress", "rundir", "distributed", "stages")
LAYERS = {**dict.fromkeys(BOTTOM, 0), "measures": 1, "subjects": 2, "tasks": 2, "distill": 3, "probes": 3,
          "audit": 4, "lab": 4, "report": 5, "select": 5, "diffing": 5, "cli": 6, "review": 6, "__main__": 7}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts).removesuffix(".__init__")] = path
    return out


def imports(path: Path, top_level_only: bool = False) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``kdlens`` import in a file (only those run at import with ``top_level_only``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kdlens":
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.split(".")[0] == "kdlens"]
    return out


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def rank(module: str) -> tuple[int, int]:
    name = package(module)
    return LAYERS[name], BOTTOM.index(name) if name in BOTTOM else 0


@pytest.mark.parametrize("module", sorted(m for m in modules() if package(m)))
def test_a_package_imports_only_from_layers_below_it(module):
    assert package(module) in LAYERS, f"{module}: add its package to DESIGN.md's layers and to LAYERS here"
    for target, names in imports(modules()[module]):
        if target == "kdlens":  # `from kdlens import io, measures`: the names are the packages
            targets = [f"kdlens.{name}" for name in names]
        else:
            targets = [target]
        for imported in targets:
            if package(imported) in ("", package(module)):
                continue
            assert rank(imported) < rank(module), f"{module} imports {imported}, at or above its layer"


def test_no_module_level_import_circle():
    known = modules()
    graph = {}
    for module, path in known.items():
        targets = set()
        for target, names in imports(path, top_level_only=True):
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            # `from package import submodule` runs the submodule; an ancestor package is already being imported
            for candidate in submodules or [target]:
                if candidate in known and candidate != module and not module.startswith(candidate + "."):
                    targets.add(candidate)
        graph[module] = targets
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_no_private_name_is_imported_from_another_module():
    for module, path in modules().items():
        for target, names in imports(path):
            private = [n for n in [*target.split("."), *names] if n.startswith("_")]
            assert not private, f"{module} imports {private} from {target}: give it a public name there"
