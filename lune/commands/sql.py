"""`lune sql`: run a query on the store through a read-only connection."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

HELP = "run a read-only SQL query on the store and print the result as a table, CSV or JSON"
EXAMPLE = 'lune sql "SELECT split, count(*) FROM facts GROUP BY split" --format csv'
CELL_WIDTH = 60  # table cells longer than this are cut (CSV and JSON print everything)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help="one SQL statement (SELECT, WITH, DESCRIBE, SHOW, ...)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")


def run(args: argparse.Namespace) -> int:
    from lune.data.store import Store

    with Store.open(args.db, read_only=True) as store:
        columns, rows = run_query(store, args.query)
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_csv_cell(v) for v in row] for row in rows])
    elif args.format == "json":
        json.dump([dict(zip(columns, row)) for row in rows], sys.stdout, ensure_ascii=False, default=str, indent=1)
        print()
    else:
        print(format_table(columns, rows))
    return 0


def run_query(store: Any, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows; a DuckDB error becomes a one-line LuneError."""
    import duckdb

    from lune.data.errors import LuneError

    try:
        table = store.arrow(query)
    except duckdb.Error as err:
        raise LuneError(f"SQL: {str(err).splitlines()[0]}") from None
    columns = table.column_names
    data = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return columns, list(zip(*data)) if data else []


def format_table(columns: list[str], rows: list[tuple[Any, ...]], *, width: int = CELL_WIDTH) -> str:
    """A plain aligned text table (numbers right-aligned) with the row count under it."""
    cells = [[_table_cell(v, width) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in rows if row[i] is not None)
        for i in range(len(columns))
    ]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _table_cell(value: Any, width: int) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _csv_cell(value: Any) -> Any:
    return "" if value is None else value
