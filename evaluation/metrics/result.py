"""What every metric function returns: an aggregate and the per-item values it was computed from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetricResult:
    """An aggregate ``value`` over ``n`` items, the ``per_item`` values it was computed from (same
    order as the input), and a ``detail`` dict of whatever else explains it (sub-aggregates,
    thresholds). ``value`` is ``None`` when there is nothing to measure (``n == 0``)."""

    value: float | None
    per_item: list[float] = field(default_factory=list)
    n: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def mean_of(cls, per_item: Sequence[float], detail: Mapping[str, Any] | None = None) -> MetricResult:
        """The plain mean of ``per_item`` (None when empty) over ``len(per_item)`` items."""
        return cls(mean(per_item), list(per_item), len(per_item), dict(detail or {}))


def mean(values: Sequence[float]) -> float | None:
    """``sum(values) / len(values)``; None when empty."""
    return sum(values) / len(values) if values else None


def check_lengths(*columns: Sequence[Any]) -> int:
    """The common length of the columns of a metric's input; ValueError when they differ."""
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        raise ValueError(f"inputs of a metric must have the same length, got {sorted(lengths)}")
    return lengths.pop() if lengths else 0
