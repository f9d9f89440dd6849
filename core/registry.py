"""One registry for every extension point: adding a method, a metric, an attack or a scorer is
adding one file to its package.

A :class:`Registry` maps names to what registers under them (a function or a class). It fills
itself the first time it is read, by importing every module of its package: a module registers
what it defines when it is imported (a decorator, or a base class's ``__init_subclass__``), so the
orchestrating code never lists the names.

    >>> ATTACKS: Registry[Attack] = Registry("attack", "lune.evaluation.attacks")
    >>> @ATTACKS.register("noise")
    ... def noise(ctx): ...
    >>> ATTACKS.names()
    ('logit_lens', 'noise', 'quantization')
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def import_submodules(package: str) -> None:
    """Import every module of ``package`` (not recursively), so that each registers what it defines."""
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{module.name}")


class Registry(Generic[T]):
    """Named entries of one kind (``kind``: how errors call them), found in ``package``'s modules."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; the same definition again (a module imported twice) is a no-op,
        another one under a taken name is an error naming both."""
        known = self._entries.get(name)
        if known is not None and _origin(known) != _origin(entry):
            raise ValueError(f"{self.kind} {name!r} is defined twice: {_origin(known)} and {_origin(entry)}")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def entries(self) -> dict[str, T]:
        """Every entry by name, sorted, after importing the package's modules."""
        import_submodules(self.package)
        return dict(sorted(self._entries.items()))

    def names(self) -> tuple[str, ...]:
        return tuple(self.entries())

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name is a KeyError that lists the known ones."""
        entries = self.entries()
        if name not in entries:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(entries) or 'none'}")
        return entries[name]


def _origin(entry: object) -> str:
    return f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', type(entry).__qualname__)}"
