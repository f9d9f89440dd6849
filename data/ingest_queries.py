"""SQL of the ingest stage and of `lune stats` (the store's other SQL lives in ``data/store.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lune.data.store import Store


def stored_splits(store: Store, fact_ids: Sequence[str]) -> dict[str, str]:
    """The split each of ``fact_ids`` already has in the store (absent ids are left out)."""
    if not fact_ids:
        return {}
    rows = store.query(
        "SELECT fact_id, split FROM facts WHERE fact_id IN (SELECT unnest(?::VARCHAR[]))", [list(fact_ids)]
    )
    return {row["fact_id"]: row["split"] for row in rows}


def table_counts(store: Store) -> list[dict[str, Any]]:
    """Rows per base table, in name order."""
    return [{"table": name, "rows": store.scalar(f'SELECT count(*) FROM "{name}"')} for name in store.tables()]


def facts_by_split(store: Store) -> list[dict[str, Any]]:
    return store.query("SELECT * FROM v_facts_by_split")


def probes_by_kind(store: Store) -> list[dict[str, Any]]:
    return store.query(
        "SELECT corpus, kind, count(*) AS probes, count(fact_id) AS tied_to_a_fact "
        "FROM probes GROUP BY ALL ORDER BY corpus, kind"
    )


def rejections_by_stage(store: Store) -> list[dict[str, Any]]:
    return store.query(
        "SELECT stage, source, count(*) AS rejections FROM rejections GROUP BY ALL ORDER BY stage, source"
    )


def runs_by_status(store: Store) -> list[dict[str, Any]]:
    """Stage runs per kind and status (``abandoned``: its process died without closing it)."""
    return store.query(
        "SELECT kind, status, count(*) AS runs, max(started_at) AS last_started FROM runs "
        "GROUP BY ALL ORDER BY kind, status"
    )


def open_runs(store: Store) -> list[dict[str, Any]]:
    """Runs that did not complete (running, failed, abandoned), newest first, with their owner."""
    columns = "run_id, kind, status, started_at, finished_at, error"
    if "pid" in store.columns("runs"):
        columns += ", pid, pid_started, host"
    return store.query(f"SELECT {columns} FROM runs WHERE status <> 'completed' ORDER BY started_at DESC")
