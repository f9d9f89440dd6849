"""One loader per input format: ``load(source, progress=False) -> list[LoadedFile]``.

Loaders read and validate; they never write. ``data.ingest`` stores what they return.
:func:`load_source` is the entry point: it resolves a benchmark reference to its files
(``data.loaders.benchmarks``) and runs the format's loader.
"""

from __future__ import annotations

from collections.abc import Callable

from lune.data.config import IngestSource
from lune.data.loaders import benchmarks, generic, knowundo, rwku, tofu
from lune.data.loaders.common import LoadedFile, Problem

LOADERS: dict[str, Callable[..., list[LoadedFile]]] = {
    "tofu": tofu.load,
    "rwku": rwku.load,
    "knowundo": knowundo.load,
    "generic": generic.load,
}


def load_source(source: IngestSource, *, progress: bool = False) -> list[LoadedFile]:
    """Read one source: every file checked, nothing written."""
    source = benchmarks.resolve(source)
    return LOADERS[source.format](source, progress=progress)


__all__ = ["LOADERS", "IngestSource", "LoadedFile", "Problem", "load_source"]
