"""SQL of `lune sweep`: the ``sweep_points`` rows (one per point, model and metric) and what the
sweep report and a resumed sweep read back from them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lune.data.store import Store

POINT_COLUMNS = (
    "sweep_id, point_id, seed, axis_values, settings, model_label, metric, value, "
    "train_seconds, trainable_params, point_store, run_id"
)


def write_points(store: Store, rows: Sequence[dict[str, Any]]) -> int:
    """Store ``sweep_points`` rows; a point measured again replaces its rows."""
    return store.insert("sweep_points", list(rows), replace=True)


def _decoded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        row["axis_values"] = json.loads(row["axis_values"] or "{}")
        row["settings"] = json.loads(row["settings"] or "{}")
    return rows


def point_rows(store: Store, point_id: str) -> list[dict[str, Any]]:
    """The rows any sweep stored for ``point_id`` (a point is its config's hash: same config, same
    numbers), newest sweep first; empty if the point never finished."""
    return _decoded(
        store.query(
            f"SELECT {POINT_COLUMNS} FROM sweep_points WHERE point_id = ? ORDER BY created_at DESC, metric",
            [point_id],
        )
    )


def sweep_rows(store: Store, sweep_id: str) -> list[dict[str, Any]]:
    """Every row of the sweep ``sweep_id``, in point, model and metric order."""
    return _decoded(
        store.query(
            f"SELECT {POINT_COLUMNS} FROM sweep_points WHERE sweep_id = ? ORDER BY point_id, model_label, metric",
            [sweep_id],
        )
    )


def latest_sweep(store: Store) -> str | None:
    """The sweep id stored last (None when no sweep has run on this store)."""
    return store.scalar("SELECT sweep_id FROM sweep_points ORDER BY created_at DESC LIMIT 1")
