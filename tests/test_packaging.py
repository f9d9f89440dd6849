"""The built wheel installs lune and only lune, with every package folder and data file in it.

The top-level folders (``data/``, ``flows/``, ...) install under the ``lune`` name (pyproject's
``package-dir``). The wheel is built the way ``pip install .`` builds it, from a copy of what a clone
holds (tracked files and new ones git does not ignore), so that a stale ``build/`` folder of the work
tree cannot hide a missing package. It is then unpacked (a pure-Python wheel installs by unpacking)
and imported by a Python that sees neither the source tree nor the editable install: ``-I -S``, cwd
a temporary folder, and the venv's site-packages added by hand without its ``.pth`` files, which is
where the editable install hooks in. The editable install the suite runs on is checked too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from lune.flows.config import load_config

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
# Folder -> installed package name (pyproject's package-dir, read the other way).
PACKAGE_OF = {folder: name for name, folder in PROJECT["tool"]["setuptools"]["package-dir"].items()}
# Data the code reads at run time; each pattern must match files, and each file must ship.
DATA_FILES = ("data/migrations/*.sql", "data/sample/**/*", "data/benchmarks/**/*", "flows/default.yaml")


def clone_files() -> list[str]:
    """Repository-relative paths a clone would hold, plus new files that git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    return sorted(path for path in listed if path and (REPO / path).is_file())  # not deleted, not a submodule


def installed_path(path: str) -> str | None:
    """Where a repository file lands in the wheel (``data/store.py`` -> ``lune/data/store.py``), if it does."""
    folder, _, rest = path.partition("/")
    if folder not in PACKAGE_OF or not rest:
        return None
    return f"{PACKAGE_OF[folder].replace('.', '/')}/{rest}"


@dataclass(frozen=True)
class Built:
    """The wheel, and the copy it was built from (the tests compare against it, not the changing work tree)."""

    source: Path
    files: list[str]
    wheel: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    source = tmp_path_factory.mktemp("source")
    files = clone_files()
    for path in files:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, source / path)
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = out.glob("lune-*.whl")
    return Built(source, files, wheel)


def test_the_wheel_holds_lune_and_only_lune(built: Built):
    names = zipfile.ZipFile(built.wheel).namelist()
    name, version = built.wheel.name.split("-")[:2]
    dist_info = f"{name}-{version}.dist-info"
    tops = sorted({name.split("/")[0] for name in names})
    assert tops == ["lune", dist_info], f"top-level entries besides lune: {tops}"


def test_the_wheel_holds_every_file_of_the_package_folders(built: Built):
    names = set(zipfile.ZipFile(built.wheel).namelist())
    for pattern in DATA_FILES:  # the data named here exists, so the check below covers it
        assert {path.relative_to(built.source).as_posix() for path in built.source.glob(pattern)}, pattern
    missing = sorted(path for path in built.files if (target := installed_path(path)) and target not in names)
    folders = sorted({str(Path(path).parent) for path in missing})
    assert not missing, (
        f"{len(missing)} files in {len(folders)} folders are not in the wheel (list a new sub-folder in pyproject's "
        f"[tool.setuptools] packages, a new kind of data file in package-data): {folders[:10]}, e.g. {missing[0]}"
    )


def test_the_wheel_declares_the_command_and_the_licence(built: Built):
    archive = zipfile.ZipFile(built.wheel)
    dist_info = next(name.split("/")[0] for name in archive.namelist() if ".dist-info/" in name)
    entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert "lune = lune.cli:main" in entry_points
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert archive.read(f"{dist_info}/licenses/LICENSE") == (built.source / "LICENSE").read_bytes()


INSTALLED_CHECK = """
import contextlib, io, json, sys
sys.path[:0] = [sys.argv[1]]
sys.path.append(sys.argv[2])  # third-party libraries; no .pth file runs, so no editable-install hook
import lune, lune.cli, lune.data.store
from lune.data.store import Store
from lune.flows.config import load_config
with Store("check.duckdb") as store:
    schema = store.schema_version()
config = load_config()
help_text = io.StringIO()
with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
    lune.cli.main(["--help"])
print(json.dumps({
    "files": [module.__file__ for module in (lune, lune.cli, lune.data.store, sys.modules["lune.flows.config"])],
    "schema": schema,
    "workdir": config.workdir,
    "help": help_text.getvalue(),
}))
"""


def test_the_installed_wheel_works_without_the_source_tree(built: Built, tmp_path: Path):
    site = tmp_path / "site"
    zipfile.ZipFile(built.wheel).extractall(site)
    run = subprocess.run(
        [sys.executable, "-I", "-S", "-c", INSTALLED_CHECK, str(site), sysconfig.get_paths()["purelib"]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.splitlines()[-1])
    assert all(Path(file).is_relative_to(site) for file in seen["files"]), seen["files"]
    newest = max(int(path.name.split("_")[0]) for path in (built.source / "data" / "migrations").glob("*.sql"))
    assert seen["schema"] == newest  # the migrations shipped as package data, all applied
    assert seen["workdir"] == load_config().workdir  # the embedded default config was found
    # Every sub-command module shipped and imports: `lune --help` lists each one, 4 spaces in.
    commands = sorted(
        path.stem for path in (built.source / "lune" / "commands").glob("*.py") if path.stem != "__init__"
    )
    listed = re.findall(r"^ {4}(\w+) ", seen["help"], flags=re.MULTILINE)
    assert listed and sorted(listed) == commands, seen["help"]


def test_the_editable_install_points_into_the_repository(tmp_path: Path):
    code = "import lune, lune.data; print(lune.__file__); print(lune.data.__file__)"
    run = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert run.stdout.split() == [str(REPO / "lune" / "__init__.py"), str(REPO / "data" / "__init__.py")]
