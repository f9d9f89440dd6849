"""`lune stats`: what the store holds, table by table, and facts per corpus and split."""

from __future__ import annotations

import argparse

HELP = "print row counts per table, facts per corpus / split / group, probes per kind, and rejections"
EXAMPLE = "lune stats --db lune.duckdb"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # only --db


def run(args: argparse.Namespace) -> int:
    from lune.data.ingest_queries import facts_by_split, probes_by_kind, rejections_by_stage, table_counts
    from lune.data.store import Store
    from lune.commands.sql import format_table

    with Store.open(args.db, read_only=True) as store:
        sections = [
            (f"{store.path} (schema version {store.schema_version()})", table_counts(store)),
            ("facts by corpus and split (v_facts_by_split)", facts_by_split(store)),
            ("probes by corpus and kind", probes_by_kind(store)),
            ("rejections by stage and source", rejections_by_stage(store)),
        ]
    for title, rows in sections:
        if not rows:
            continue
        columns = list(rows[0])
        print(title)
        print(format_table(columns, [tuple(r[c] for c in columns) for r in rows]))
        print()
    return 0
