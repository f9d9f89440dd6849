"""SQL text that comes from users: what it may be, and where it runs.

Two kinds reach lune: a whole query (``lune sql``), run on a read-only connection that may read the
store and nothing else, and a filter condition (``generate.where`` / ``--where``), run in a sandbox
that holds only the rows being filtered. DuckDB's own parser decides what a text is, never string
matching: a text that parses as more than the one thing asked for is refused, with its option named.

    >>> read_only_problem("SELECT 1; DELETE FROM facts")
    'it holds 2 statements; `lune sql` runs one query at a time'
    >>> filter_rows(facts_table, "corpus = 'tofu'", option="generate.where (--where)")
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from lune.data.errors import LuneError

# Settings of every connection that runs a user's SQL: no file, network or extension beyond the
# database itself (read_text, read_csv, glob, COPY, ATTACH, EXPORT, INSTALL, LOAD of a file), and
# no SET / RESET / PRAGMA that could lift that, since the configuration is locked once opened.
SANDBOX_SETTINGS: dict[str, Any] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "lock_configuration": True,
}
# Statement types a read-only query may be: DuckDB parses WITH, DESCRIBE, SHOW, SUMMARIZE, FROM-first,
# VALUES and TABLE as SELECT. Everything else (SET, PRAGMA, CALL, LOAD, INSTALL, CREATE [TEMP], ATTACH,
# COPY, EXPORT, BEGIN, CHECKPOINT, ...) is refused before it runs.
READ_ONLY_STATEMENTS = frozenset({"SELECT"})


class UnsafeFilterError(LuneError):
    """A filter option whose text is not one condition, or that does not run on the rows it filters."""


def read_only_problem(sql: str) -> str | None:
    """Why ``sql`` cannot run on a read-only ``lune sql`` connection, or None when it may.

    A text DuckDB cannot parse passes: running it gives DuckDB's own parser error, which says where.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error:
        return None
    if len(statements) != 1:
        return f"it holds {len(statements)} statements; `lune sql` runs one query at a time"
    kind = statements[0].type.name
    if kind not in READ_ONLY_STATEMENTS:
        return f"{kind} statements are refused (only queries run: SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE)"
    return None


def check_condition(condition: str, *, option: str, columns: str) -> str:
    """``condition`` stripped, once DuckDB has parsed it as exactly one expression; else an error
    naming ``option`` (``"generate.where (--where)"``) and the ``columns`` it may use."""
    text = condition.strip()
    try:
        duckdb.SQLExpression(text)
    except duckdb.Error as err:
        raise UnsafeFilterError(
            f"{option} {condition!r} is not one SQL condition on {columns} "
            f"({str(err).splitlines()[0]}); give a single expression such as \"corpus = 'tofu' AND split = 'forget'\", "
            "without semicolons or unbalanced parentheses"
        ) from None
    return text


def filter_rows(rows: pa.Table, condition: str, *, option: str, table: str) -> pa.Table:
    """The rows of ``rows`` for which ``condition`` holds, evaluated in a sandbox.

    The sandbox is an in-memory DuckDB connection that holds only ``rows`` (as a view named
    ``table``), with external access off and its configuration locked: whatever the condition
    says, it cannot reach the store, a file or the network, and nothing it does outlives the call.
    """
    columns = f"table {table} (columns: {', '.join(rows.column_names)})"
    text = check_condition(condition, option=option, columns=columns)
    con = duckdb.connect(":memory:", config=SANDBOX_SETTINGS)
    try:
        con.register(table, rows)
        return con.sql(f'SELECT * FROM "{table}" WHERE ({text})').to_arrow_table()
    except duckdb.Error as err:
        raise UnsafeFilterError(
            f"{option} {condition!r} is not a valid condition on {columns}: {str(err).splitlines()[0]}"
        ) from None
    finally:
        con.close()
