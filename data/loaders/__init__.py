"""One loader per input format: ``load(source, progress=False) -> list[LoadedFile]``.

Loaders read and validate; they never write. ``data.ingest`` stores what they return.
"""

from __future__ import annotations

from collections.abc import Callable

from lune.data.config import IngestSource
from lune.data.loaders import generic, knowundo, rwku, tofu
from lune.data.loaders.common import LoadedFile, Problem

LOADERS: dict[str, Callable[..., list[LoadedFile]]] = {
    "tofu": tofu.load,
    "rwku": rwku.load,
    "knowundo": knowundo.load,
    "generic": generic.load,
}

__all__ = ["LOADERS", "IngestSource", "LoadedFile", "Problem"]
