"""`lune stats`: what the store holds, table by table, and facts per corpus and split."""

from __future__ import annotations

import argparse
from typing import Any

HELP = (
    "print row counts per table, facts per corpus / split / group, probes per kind, rejections, "
    "and the runs that did not complete"
)
EXAMPLE = "lune stats --db lune.duckdb"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # only --db


def run(args: argparse.Namespace) -> int:
    from lune.commands.sql import format_table
    from lune.data.ingest_queries import (
        facts_by_split,
        open_runs,
        probes_by_kind,
        rejections_by_stage,
        runs_by_status,
        table_counts,
    )
    from lune.data.store import Store

    with Store.open(args.db, read_only=True) as store:
        unfinished = unfinished_runs(open_runs(store))
        sections = [
            (f"{store.path} (schema version {store.schema_version()})", table_counts(store)),
            ("facts by corpus and split (v_facts_by_split)", facts_by_split(store)),
            ("probes by corpus and kind", probes_by_kind(store)),
            ("rejections by stage and source", rejections_by_stage(store)),
            ("runs by kind and status", runs_by_status(store)),
            (
                "runs that did not complete (abandoned: its process died without closing it; "
                "rerun the same command to resume)",
                unfinished,
            ),
        ]
    for title, rows in sections:
        if not rows:
            continue
        columns = list(rows[0])
        print(title)
        print(format_table(columns, [tuple(r[c] for c in columns) for r in rows]))
        print()
    return 0


def unfinished_runs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs that did not complete; a ``running`` one whose process is gone shows as
    ``abandoned`` even before a writing command has marked it so (this connection is read-only)."""
    from lune.data.run_owner import owner_alive

    out = []
    for row in rows:
        status = row["status"]
        if status == "running" and not owner_alive(row.get("pid"), row.get("pid_started"), row.get("host")):
            status = "abandoned"
        out.append(
            {
                "run_id": row["run_id"],
                "kind": row["kind"],
                "status": status,
                "started_at": row["started_at"],
                "finished_at": row["finished_at"],
                "error": row["error"],
            }
        )
    return out
