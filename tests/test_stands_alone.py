"""The repository stands alone: a clean clone has everything the tests, the configs and the code
read. Nothing may point outside it at the benchmark folder that sits next to the repository on the
development machine; the benchmark copies ship in ``data/benchmarks/``."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKED = (
    "tests",
    "configs",
    "flows",
    "lune",
    "data",
    "generators",
    "unlearn",
    "evaluation",
    "core",
    "scripts",
    "bench",
    "Makefile",
)
# Written in pieces so that this file does not name what it looks for.
OUTSIDE = re.compile(
    re.escape(b"../" + b"shared")
    + b"|"
    + re.escape(b"shared" + b"/data")
    + rb"""|/\s*["']"""
    + b"shared"
    + rb"""["']"""
)  # and a path joined with /


def checked_files() -> list[Path]:
    files = []
    for name in CHECKED:
        path = REPO / name
        found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files += [p for p in found if "__pycache__" not in p.parts]
    return files


def test_nothing_reads_outside_the_repository() -> None:
    files = checked_files()
    assert REPO / "tests" / "conftest.py" in files and REPO / "data" / "benchmarks" / "tofu" / "forget10.json" in files
    found = [
        f"{path.relative_to(REPO)}: {match.group().decode()}"
        for path in files
        for match in [OUTSIDE.search(path.read_bytes())]
        if match
    ]
    assert not found, "these files point outside the repository:\n" + "\n".join(found)


def test_the_pattern_finds_what_it_must() -> None:
    for text in ("../" + "shared/x", "shared" + "/data/tofu", "REPO.parent / " + '"shared"', "path: ../../" + "shared"):
        assert OUTSIDE.search(text.encode()), text
    assert not OUTSIDE.search(b"a shared layer; shared_data; the shared settings")
