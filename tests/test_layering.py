"""The layers stay apart: `fl_chain` is the library both sides share, and never reaches Flower;
the aggregator and the participants are adapters that never reach each other.

Imports are read from the source (every `import`, at any depth, including those inside
functions), and followed through the repository's own modules, so a dependency through
a third module counts as one.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("fl_chain", "clients", "aggregator", "experiments")


def module_path(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(module: str) -> set[str]:
    """Every module `module` names in an import statement, relative ones made absolute."""
    path = module_path(module)
    assert path is not None, module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            source = ".".join(part for part in (base, node.module or "") if part)
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names if module_path(f"{source}.{alias.name}"))
    return names


@cache
def reachable(module: str) -> frozenset[str]:
    """Every module `module` imports, directly or through the repository's own modules."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        current = pending.pop()
        for name in imported_names(current):
            if name in seen:
                continue
            seen.add(name)
            if name.split(".")[0] in PACKAGES and module_path(name):
                pending.append(name)
    return frozenset(seen)


def modules_of(package: str) -> list[str]:
    return sorted(".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                  for path in (REPO / package).rglob("*.py"))


def reaching(package: str, forbidden: str) -> dict[str, list[str]]:
    found = {}
    for module in modules_of(package):
        hits = sorted(name for name in reachable(module) if name == forbidden or name.startswith(forbidden + "."))
        if hits:
            found[module] = hits
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("fl_chain", "flwr"), ("fl_chain", "clients"), ("fl_chain", "aggregator"), ("fl_chain", "experiments"),
    ("aggregator", "clients"), ("clients", "aggregator"), ("clients", "experiments"),
])
def test_layer_never_reaches(package: str, forbidden: str) -> None:
    assert reaching(package, forbidden) == {}


def test_the_check_sees_an_import_through_another_module() -> None:
    """The experiments harness does reach Flower (through the aggregator): the walk must see it."""
    assert "flwr.serverapp" in reachable("experiments.harness")
    assert any(name.startswith("clients") for name in reachable("experiments.simulation"))
