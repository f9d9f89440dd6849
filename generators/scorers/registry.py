"""The scorers by name, found in this package's modules: adding a scorer is adding one file.

>>> scorer_names()
('answer_leak', 'contradiction', 'duplicate', 'fluency', 'quality', 'similarity')
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache
from pathlib import Path

from lune.data.errors import LuneError
from lune.generators.config import ScoreConfig
from lune.generators.scorers.base import Scorer


@cache
def _scorers() -> dict[str, type[Scorer]]:
    """Every concrete Scorer subclass defined in a module of this package, by name."""
    # Imported on first use, not with the package: a module here may import modules (curation)
    # that import the package themselves.
    found: dict[str, type[Scorer]] = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        module = importlib.import_module(f"{__package__}.{info.name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Scorer)
                and obj.__module__ == module.__name__
                and not inspect.isabstract(obj)
            ):
                if obj.name in found:
                    raise LuneError(
                        f"two scorers are named {obj.name!r}: {found[obj.name].__module__} and {obj.__module__}"
                    )
                found[obj.name] = obj
    return dict(sorted(found.items()))


def scorer_names() -> tuple[str, ...]:
    """Every scorer's name, sorted."""
    return tuple(_scorers())


def scorer_class(name: str) -> type[Scorer]:
    """The scorer named ``name``; a LuneError naming the known ones otherwise."""
    scorers = _scorers()
    if name not in scorers:
        raise LuneError(f"score.scorers: unknown scorer {name!r}; known: {', '.join(scorers)}")
    return scorers[name]


def scorer_version(name: str, config: ScoreConfig) -> str | None:
    """The version string ``name`` writes under ``config`` (None: the scorer is off)."""
    return scorer_class(name).version(config)
