"""Imports run one way, down the layers, and no modules import each other.

Every module of the package is parsed (imports inside functions and `if TYPE_CHECKING:` blocks count: they
are dependencies too) and each `rlkit...` import is checked against LAYERS: a module may import its own
unit and the units of the layers below it, never a unit of its own layer or of one above. A cycle among
modules, of any length, fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import REPO

PACKAGE = REPO / "rlkit"

# Lowest first. A unit is a module or a subpackage of rlkit ("rlkit" alone is the package's __init__.py);
# units of one layer do not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("rlkit", "rlkit.errors"),
    ("rlkit.registry",),
    ("rlkit.algorithms",),
    ("rlkit.config",),
    ("rlkit.batch", "rlkit.buckets", "rlkit.distributed", "rlkit.heap", "rlkit.timeouts", "rlkit.timing",
     "rlkit.trajectory"),
    ("rlkit.placement",),
    ("rlkit.data", "rlkit.models", "rlkit.rewards", "rlkit.tools"),
    ("rlkit.engines", "rlkit.rollout", "rlkit.environments"),
    ("rlkit.experience",),
    ("rlkit.trainer",),
    ("rlkit.bench", "rlkit.evaluation", "rlkit.export", "rlkit.plotting"),
    ("rlkit.cli",),
    ("rlkit.__main__",),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (REPO / relative.with_suffix(".py")).is_file() or (REPO / relative / "__init__.py").is_file()


def imports_in(source: str, module: str, is_package: bool) -> set[str]:
    """Every rlkit module `source` (the text of `module`) imports; `from package import name` counts as the
    submodule when it is one."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if is_module(submodule) else base)
    return {name for name in found if name == "rlkit" or name.startswith("rlkit.")}


def import_graph() -> dict[str, set[str]]:
    """{module: the rlkit modules it imports} for every module of the package."""
    return {module_name(path): imports_in(path.read_text(), module_name(path), path.name == "__init__.py")
            for path in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    """The longest unit of LAYERS that contains `module`."""
    units = [unit for layer in LAYERS for unit in layer
             if module == unit or (unit != "rlkit" and module.startswith(unit + "."))]
    assert units, f"{module} belongs to no unit of LAYERS: add it to a layer in tests/unit/test_layers.py"
    return max(units, key=len)


def layer_of(unit: str) -> int:
    return next(index for index, layer in enumerate(LAYERS) if unit in layer)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'A imports B' for every import of a unit in A's own layer or above."""
    wrong = []
    for module, imports in graph.items():
        unit = unit_of(module)
        for target in sorted(imports):
            target_unit = unit_of(target)
            if target_unit != unit and layer_of(target_unit) >= layer_of(unit):
                wrong.append(f"{module} imports {target} ({target_unit} is not below {unit})")
    return wrong


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_every_module_belongs_to_a_layer():
    for module in import_graph():
        unit_of(module)


def test_imports_run_down_the_layers():
    wrong = upward_imports(import_graph())
    assert not wrong, "\n".join(wrong)


def test_no_modules_import_each_other():
    cycles = import_cycles(import_graph())
    assert not cycles, f"modules that import each other: {cycles}"


@pytest.mark.parametrize("source, expected", [
    ("from rlkit.engines.base import EngineSpec\n", {"rlkit.engines.base"}),
    ("from rlkit.engines import passes\n", {"rlkit.engines.passes"}),
    ("from rlkit import registry, __version__\n", {"rlkit.registry", "rlkit"}),
    ("def build():\n    import rlkit.cli.main\n", {"rlkit.cli.main"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rlkit.batch import Batch\n", {"rlkit.batch"}),
    ("from . import metrics\nfrom ..batch import Batch\n", {"rlkit.trainer.metrics", "rlkit.batch"}),
    ("import torch\nfrom os import path\n", set()),
])
def test_the_parser_sees_every_kind_of_import(source, expected):
    assert imports_in(source, "rlkit.trainer.probe", is_package=False) == expected


def test_the_checks_catch_an_upward_import_and_a_cycle():
    graph = {"rlkit.rollout.hf": {"rlkit.engines.base"}, "rlkit.engines.base": {"rlkit.distributed"},
             "rlkit.distributed": {"rlkit.trainer.rl"}, "rlkit.trainer.rl": {"rlkit.distributed"}}
    assert upward_imports(graph) == [
        "rlkit.rollout.hf imports rlkit.engines.base (rlkit.engines is not below rlkit.rollout)",
        "rlkit.distributed imports rlkit.trainer.rl (rlkit.trainer is not below rlkit.distributed)",
    ]
    assert import_cycles(graph) == [["rlkit.distributed", "rlkit.trainer.rl"]]
