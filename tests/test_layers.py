"""Imports run one way: store and records -> shared layer -> stages -> flows -> command line.

Layers, lowest first (README, "Layout"):

0. ``lune.data``: records, ids, errors, the store and every SQL query (and export's readers);
1. ``lune.core``: what every stage shares (config base, text matching, model loading, greedy
   decoding, likelihood batches, prompt formatting, the vLLM engine);
2. the stages: ingest (``lune.data.config``, ``lune.data.ingest``, ``lune.data.loaders``),
   ``lune.generators``, ``lune.unlearn``, ``lune.evaluation``; a stage never imports another;
3. ``lune.flows``: Prefect flows, wiring only;
4. the command line: ``lune.cli``, ``lune.commands``, and the rest of the ``lune`` folder.

A module may import its own layer's modules (its own stage's, at layer 2) and any lower layer's.
The walk reads every ``import`` statement with ``ast``, including those inside functions, so a
lazy import against the direction fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Installed name -> folder (pyproject.toml's package-dir).
FOLDERS = {
    "lune.core": "core",
    "lune.data": "data",
    "lune.generators": "generators",
    "lune.unlearn": "unlearn",
    "lune.evaluation": "evaluation",
    "lune.flows": "flows",
    "lune": "lune",
}
INGEST_STAGE = ("lune.data.config", "lune.data.ingest", "lune.data.loaders")


def layer_of(module: str) -> tuple[int, str]:
    """(layer number, stage name) of a ``lune`` module name."""

    def under(prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    if any(under(p) for p in INGEST_STAGE):
        return 2, "ingest"
    if under("lune.data"):
        return 0, "data"
    if under("lune.core"):
        return 1, "core"
    for stage in ("generators", "unlearn", "evaluation"):
        if under(f"lune.{stage}"):
            return 2, stage
    if under("lune.flows"):
        return 3, "flows"
    return 4, "cli"


def module_name(path: Path) -> str:
    for name, folder in sorted(FOLDERS.items(), key=lambda kv: -len(kv[0])):
        root = REPO / folder
        if root in path.parents:
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            return ".".join((name, *parts))
    raise AssertionError(f"{path} is in no package folder")


def imported_modules(path: Path, here: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of every ``lune`` import in a file, relative imports resolved (``here``: the
    file's module name, by default from its place in the repository)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = here or module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from lune.x import y` may import the module lune.x.y
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "lune" or name.startswith("lune.")]


def is_module(name: str) -> bool:
    """Whether ``name`` names a module or package of ours (not an attribute of one)."""
    for prefix, folder in sorted(FOLDERS.items(), key=lambda kv: -len(kv[0])):
        if name == prefix or name.startswith(prefix + "."):
            rest = name[len(prefix) + 1 :].split(".") if name != prefix else []
            base = REPO / folder / Path(*rest) if rest else REPO / folder
            return base.with_suffix(".py").exists() or (base / "__init__.py").exists() or base.is_dir()
    return False


def file_violations(path: Path, source: str) -> list[str]:
    """The imports of one file (module ``source``) that run against the layer direction."""
    found = []
    src_layer, src_stage = layer_of(source)
    for line, target in imported_modules(path, source):
        if not is_module(target):
            continue
        dst_layer, dst_stage = layer_of(target)
        upward = dst_layer > src_layer
        sideways = dst_layer == src_layer == 2 and dst_stage != src_stage
        if upward or sideways:
            found.append(
                f"{path}:{line}: {source} (layer {src_layer}, {src_stage}) "
                f"imports {target} (layer {dst_layer}, {dst_stage})"
            )
    return found


def violations() -> list[str]:
    found = []
    for folder in FOLDERS.values():
        for path in sorted((REPO / folder).rglob("*.py")):
            found += file_violations(path.relative_to(REPO), module_name(path))
    return found


def test_imports_run_one_way() -> None:
    found = violations()
    assert not found, "imports against the layer direction:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("lune.data.store", (0, "data")),
        ("lune.data.loaders.tofu", (2, "ingest")),
        ("lune.core.matching", (1, "core")),
        ("lune.unlearn.losses", (2, "unlearn")),
        ("lune.flows.pipeline", (3, "flows")),
        ("lune.commands.run", (4, "cli")),
    ],
)
def test_layer_of(module: str, expected: tuple[int, str]) -> None:
    assert layer_of(module) == expected


def test_the_walk_sees_a_lazy_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import inside a function, against the direction, is found."""
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from lune.flows import pipeline\n    from . import matching\n")
    found = imported_modules(path, "lune.core.probe")
    assert (2, "lune.flows") in found and (2, "lune.flows.pipeline") in found
    assert (3, "lune.core.matching") in found
    assert [v.split(": ", 1)[1].split(" imports ")[1] for v in file_violations(path, "lune.core.probe")] == [
        "lune.flows (layer 3, flows)",
        "lune.flows.pipeline (layer 3, flows)",
    ]
    # the same file placed in the command line may import anything
    assert file_violations(path, "lune.commands.probe") == []
