"""Injected batch failures, for the tests of resumption and task retries.

Not a setting and not a parameter of any public function: a test arms it for a block, and the
generation task checks it before its batch. It lives in the process (tasks on the default thread
runner see it; Dask worker processes do not).

    >>> with injected_faults(fail=[2], flaky=[0]):   # batch 2 always fails, batch 0 on its first attempt
    ...     build_negatives(db, config)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class InjectedFailure(RuntimeError):
    """The failure of a batch named by :func:`injected_faults`."""


@dataclass(frozen=True)
class BatchFaults:
    """Batch indices whose task always fails (``fail``) or fails on its first attempt only (``flaky``)."""

    fail: frozenset[int] = frozenset()
    flaky: frozenset[int] = frozenset()

    def check(self, batch_index: int, attempt: int) -> None:
        """Raise :class:`InjectedFailure` if batch ``batch_index`` must fail on ``attempt`` (from 1)."""
        if batch_index in self.fail:
            raise InjectedFailure(f"injected failure in batch {batch_index}")
        if batch_index in self.flaky and attempt <= 1:
            raise InjectedFailure(f"injected first-attempt failure in batch {batch_index}")


_active = BatchFaults()


def active_faults() -> BatchFaults:
    """The faults armed in this process (none outside :func:`injected_faults`)."""
    return _active


@contextmanager
def injected_faults(fail: Iterable[int] = (), flaky: Iterable[int] = ()) -> Iterator[BatchFaults]:
    """Arm batch failures for the block; disarmed when it ends, whatever happens."""
    global _active
    previous, _active = _active, BatchFaults(frozenset(fail), frozenset(flaky))
    try:
        yield _active
    finally:
        _active = previous
