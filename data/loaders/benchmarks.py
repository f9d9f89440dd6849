"""Benchmarks named by reference: ``tofu:forget10``, ``rwku:1_Stephen_King``, ``knowundo:privacy``.

A source that gives ``benchmark`` instead of ``format`` and ``path`` reads the copy shipped with
lune (``data/benchmarks/``, installed as ``lune/data/benchmarks/``, each with its licence), or the
Hugging Face dataset when the source says ``hub: true`` or the environment says
``LUNE_BENCHMARK_SOURCE=hub`` (see ``data.loaders.hub``).

| reference | what is read |
|---|---|
| ``tofu:forget01``, ``tofu:forget05``, ``tofu:forget10`` | the TOFU folder with that forget split |
| ``rwku:<target folder>`` (``rwku:1_Stephen_King``), ``rwku:all`` | one RWKU target's folder, or every one |
| ``knowundo:privacy`` (the Hub also has ``copyright``) | the KnowUnDo domain's folder |

A reference is checked when the source is validated (when a config is read): an unknown benchmark
or part is an error that names what exists.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lune.data.config import IngestSource
from lune.data.errors import LuneError
from lune.data.loaders import knowundo, rwku, tofu
from lune.data.loaders.hub import HUB_PARTS, download

SHIPPED = Path(__file__).resolve().parents[1] / "benchmarks"  # data/benchmarks (installed: lune/data/benchmarks)
ALL = "all"  # rwku:all, every target
SOURCE_VARIABLE = "LUNE_BENCHMARK_SOURCE"  # shipped (default) or hub


class BenchmarkError(LuneError, ValueError):
    """A reference to no known benchmark or part; a ValueError too, so that config validation
    reports it on the source that holds it."""


@dataclass(frozen=True)
class Benchmark:
    """A benchmark a source can name: ``name`` is the reference's prefix, its loader and its folder."""

    name: str
    title: str
    part: str  # what the part after the colon names, for messages
    example: str
    shipped_parts: Callable[[Path], list[str]]  # its folder -> the parts it holds
    files: Callable[[Path, str], dict[str, Any]]  # (its folder, part) -> the IngestSource fields that read them


def _rwku_parts(folder: Path) -> list[str]:
    return [ALL, *(p.name for p in rwku.target_folders(folder))]


def _knowundo_parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(map(knowundo.split_of, p.glob("*.json"))))


BENCHMARKS: dict[str, Benchmark] = {
    "tofu": Benchmark(
        name="tofu",
        title="TOFU",
        part="forget split",
        example="tofu:forget10",
        shipped_parts=tofu.forget_stems,
        files=lambda folder, part: {"path": str(folder), "forget": part},
    ),
    "rwku": Benchmark(
        name="rwku",
        title="RWKU",
        part="target",
        example="rwku:1_Stephen_King",
        shipped_parts=_rwku_parts,
        files=lambda folder, part: {"path": str(folder if part == ALL else folder / part)},
    ),
    "knowundo": Benchmark(
        name="knowundo",
        title="KnowUnDo",
        part="domain",
        example="knowundo:privacy",
        shipped_parts=_knowundo_parts,
        files=lambda folder, part: {"path": str(folder / part)},
    ),
}


def use_hub(hub: bool = False) -> bool:
    """Whether a reference is read from the Hub: the source's ``hub``, else ``LUNE_BENCHMARK_SOURCE``."""
    value = os.environ.get(SOURCE_VARIABLE, "").strip().lower() or "shipped"
    if value not in ("shipped", "hub"):
        raise BenchmarkError(f"{SOURCE_VARIABLE}={value}: expected shipped (the default) or hub")
    return hub or value == "hub"


def check(reference: str, *, hub: bool = False) -> tuple[Benchmark, str]:
    """The benchmark and part ``reference`` names; BenchmarkError unless the part exists where it
    will be read (the shipped copy, or the parts the Hub is known to have)."""
    name, _, part = (text.strip() for text in reference.partition(":"))
    benchmark = BENCHMARKS.get(name)
    if benchmark is None:
        raise BenchmarkError(
            f"{reference}: unknown benchmark {name!r}; lune knows "
            + ", ".join(f"{b.name} (e.g. {b.example})" for b in BENCHMARKS.values())
        )
    if use_hub(hub):
        where, known = "on the Hugging Face Hub", HUB_PARTS[name]
    else:
        where, known = "in the copy shipped with lune", benchmark.shipped_parts(SHIPPED / name)
    if not part:
        choices = ", ".join(f"{name}:{p}" for p in known) if known else f"e.g. {benchmark.example}"
        raise BenchmarkError(f"{reference}: name the {benchmark.part} after a colon: {choices}")
    if known is not None and part not in known:
        close = difflib.get_close_matches(part, known, n=1)
        hint = f" (did you mean {name}:{close[0]}?)" if close else ""
        raise BenchmarkError(
            f"{reference}: no {benchmark.title} {benchmark.part} {part!r} {where}{hint}; "
            "choose one of: " + ", ".join(f"{name}:{p}" for p in known)
        )
    return benchmark, part


def resolve(source: IngestSource) -> IngestSource:
    """The source that reads the files a ``benchmark`` reference names (downloaded first when read
    from the Hub); a source without a reference is returned as it is."""
    if source.benchmark is None:
        return source
    benchmark, part = check(source.benchmark, hub=source.hub)
    root = download(benchmark.name, part) if use_hub(source.hub) else SHIPPED
    return IngestSource(
        format=benchmark.name,
        corpus=source.corpus,
        skip_invalid=source.skip_invalid,
        **benchmark.files(root / benchmark.name, part),
    )
