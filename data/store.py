"""The DuckDB store: the only module that opens the file.

Every stage reads and writes named tables through a :class:`Store`. The schema is a list of
numbered SQL files in ``data/migrations/``; opening a file for writing applies the ones it has not
seen yet, in order, and records each in ``schema_migrations``, so a file made by an older version of
lune is upgraded in place, never recreated.

Stage-specific SQL lives in ``data/`` too (``data/*_queries.py``), written against this class's
``query`` / ``arrow`` / ``execute`` / ``insert`` methods.

    >>> with Store.open("lune.duckdb") as store:
    ...     store.insert("facts", [fact.to_row() for fact in facts])
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from lune.data.errors import LuneError
from lune.data.run_owner import current_owner, owner_alive
from lune.data.safe_sql import SANDBOX_SETTINGS, read_only_problem

DEFAULT_DB = "lune.duckdb"
MIGRATION_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

# Primary keys of the tables written through `insert`: rows whose key is already stored are
# skipped (idempotent writes), and duplicates inside one batch keep their first occurrence.
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "facts": ("fact_id",),
    "probes": ("probe_id",),
    "candidates": ("candidate_id",),
    "scores": ("candidate_id", "scorer", "scorer_version"),
    "embeddings": ("text_hash", "model"),
    "curated_sets": ("set_id",),
    "curated_items": ("set_id", "candidate_id"),
    "runs": ("run_id",),
    "eval_results": ("result_id",),
    "eval_items": ("item_id",),
    "rejections": ("rejection_id",),
    "sweep_points": ("sweep_id", "point_id", "model_label", "metric"),
}


@dataclass
class RunRecord:
    """What a stage run reports when it ends (see :meth:`Store.run`)."""

    run_id: str
    metrics: dict[str, Any] = field(default_factory=dict)
    artefacts: dict[str, Any] = field(default_factory=dict)
    status: str = "completed"
    error: str | None = None

    def fail(self, error: str) -> None:
        """End the run as failed with ``error`` when the block finishes (without raising)."""
        self.status, self.error = "failed", error


class StoreError(LuneError):
    """A problem with the store file that the user can act on."""


class StoreLockedError(StoreError):
    """Another process holds the file open for writing."""


class ReadOnlyViolation(StoreError):
    """A write statement was sent through a read-only connection."""


def default_db_path() -> Path:
    """``$LUNE_DB`` if set, else ``./lune.duckdb``."""
    return Path(os.environ.get("LUNE_DB") or DEFAULT_DB)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """The migration files shipped with this version, in order."""
    found = []
    for entry in resources.files("lune.data.migrations").iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"two migration files share a number in data/migrations: {versions}")
    return found


def _to_json(value: Any) -> Any:
    """JSON-encode dicts and lists bound for the VARCHAR JSON columns; leave scalars alone."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return value


class Store:
    """One open DuckDB file with lune's schema.

    ``read_only=True`` opens the file so that DuckDB itself refuses any write (used by ``lune sql``),
    with external access off and the configuration locked (no file, network or extension beyond
    the store: ``data.safe_sql.SANDBOX_SETTINGS``), and runs one query per call (SELECT and what
    DuckDB parses as one: WITH, DESCRIBE, SHOW, ...); it needs the file to exist. Writable stores
    apply pending migrations on open.
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False, migrate_to: int | None = None):
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise StoreError(f"{self.path}: no such store file; create it with `lune ingest --db {self.path} ...`")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(
                str(self.path), read_only=read_only, config=dict(SANDBOX_SETTINGS) if read_only else {}
            )
        except duckdb.IOException as err:
            if "lock" in str(err).lower():
                raise StoreLockedError(
                    f"{self.path}: the store is open in another process, which holds DuckDB's write lock. "
                    "Wait for that lune command to finish (or stop it), then run this again; "
                    "to read while it runs, copy the file and point --db at the copy."
                ) from None
            raise StoreError(f"{self.path}: cannot open the store: {err}") from None
        if not read_only:
            self.migrate(migrate_to)
            self.close_abandoned_runs()

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Store:
        """Open ``path`` (default: :func:`default_db_path`)."""
        return cls(path if path is not None else default_db_path(), **kwargs)

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file. The object keeps no DuckDB handle afterwards, so one that outlives its run
        (held by a traceback that Prefect keeps in a failed flow's state) holds nothing open."""
        if hasattr(self, "con"):
            self.con.close()
            del self.con

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ----------------------------------------------------------------------------------

    def schema_version(self) -> int:
        """Highest migration applied to this file (0 for an empty file)."""
        exists = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        ).fetchall()[0][0]
        if not exists:
            return 0
        return self.con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0]

    def migrate(self, target: int | None = None) -> list[int]:
        """Apply the migrations this file lacks (up to ``target``), each in its own transaction."""
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP DEFAULT current_timestamp)"
        )
        current = self.schema_version()
        known = available_migrations()
        if known and current > known[-1].version:
            raise StoreError(
                f"{self.path}: schema version {current} is newer than this lune knows ({known[-1].version}); "
                "upgrade lune to open it."
            )
        # Apply every migration the file has not recorded, not only those above its maximum: a
        # number left free (and filled by a later version) is applied too, in order.
        done = {row[0] for row in self.con.execute("SELECT version FROM schema_migrations").fetchall()}
        applied = []
        for migration in known:
            if migration.version in done or (target is not None and migration.version > target):
                continue
            with self.transaction():
                self.con.execute(migration.sql)
                self.con.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [migration.version, migration.name]
                )
            applied.append(migration.version)
        return applied

    def tables(self) -> list[str]:
        rows = self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    def columns(self, table: str) -> list[str]:
        rows = self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
        return [r[0] for r in rows]

    # -- reads -----------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query and return its rows as dicts."""
        result = self._execute(sql, params)
        if result.description is None:
            return []
        names = [d[0] for d in result.description]
        return [dict(zip(names, row)) for row in result.fetchall()]

    def arrow(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query and return an Arrow table (fast path for large reads).

        Goes through a relation (``con.sql``): DuckDB 2 warns that Arrow output of an
        ``execute()`` result makes an extra copy of the rows. A statement without a result (DDL)
        gives an empty table.
        """
        self._refuse_unless_query(sql)
        try:
            relation = self.con.sql(sql, params=params)
        except (duckdb.InvalidInputException, duckdb.PermissionException) as err:
            self._raise_read_only(err)
            raise
        return relation.to_arrow_table() if relation is not None else pa.table({})

    def scalar(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        rows = self._execute(sql, params).fetchall()
        return rows[0][0] if rows else None

    # -- writes ----------------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> None:
        """Run a statement and discard its result (an unread result would block the connection)."""
        self._execute(sql, params).fetchall()

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]] | pa.Table, *, replace: bool = False) -> int:
        """Bulk-insert rows through Arrow; return how many new rows were stored.

        Rows whose primary key is already in the table are skipped (``replace=True`` overwrites them
        instead). Columns absent from ``rows`` take their defaults. Dict and list values are stored
        as JSON text.
        """
        if table not in TABLE_KEYS and table not in self.tables():
            raise StoreError(f"unknown table {table!r}")
        if isinstance(rows, pa.Table):
            batch = rows
        else:
            if not rows:
                return 0
            names = list(dict.fromkeys(name for row in rows for name in row))
            batch = pa.table({name: [_to_json(row.get(name)) for row in rows] for name in names})
        if batch.num_rows == 0:
            return 0
        unknown = set(batch.column_names) - set(self.columns(table))
        if unknown:
            raise StoreError(f"table {table!r} has no column(s) {sorted(unknown)}")
        key = TABLE_KEYS.get(table)
        if key:
            batch = _first_per_key(batch, key)
        with self.temporary_view(batch, "insert") as view:
            columns = ", ".join(f'"{c}"' for c in batch.column_names)
            verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
            result = self.con.execute(
                f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM "{view}"'
                if not key
                else f'{verb} INTO "{table}" ({columns}) SELECT {columns} FROM "{view}"'
            )
            inserted = result.fetchall()
        return int(inserted[0][0]) if inserted else 0

    @contextmanager
    def temporary_view(
        self, data: pa.Table | Mapping[str, Sequence[Any] | pa.Array], purpose: str = "view"
    ) -> Iterator[str]:
        """Register ``data`` (an Arrow table, or columns by name) as a view for the block; yield its name.

        The name is unique, so nested or concurrent blocks never collide, and the view is dropped
        when the block ends, whatever happens inside it. SQL joins against it like a table:

            >>> with store.temporary_view({"fact_id": ids}) as view:
            ...     rows = store.query(f'SELECT f.* FROM facts f JOIN "{view}" USING (fact_id)')
        """
        table = data if isinstance(data, pa.Table) else pa.table(dict(data))
        name = f"_lune_{purpose}_{uuid.uuid4().hex}"
        self.con.register(name, table)
        try:
            yield name
        finally:
            self.con.unregister(name)

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """All writes inside commit together or not at all."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.con.execute("COMMIT")

    # -- runs and rejections ---------------------------------------------------------------------

    def start_run(
        self,
        kind: str,
        config: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        """Record a stage run as running and return its id (a fresh one unless given)."""
        run_id = run_id or uuid.uuid4().hex[:16]
        owner = current_owner()
        # A run id can be started again (a resumed stage, or a stage whose row the pipeline created
        # first): keep its parent and start time, refresh the rest (its owner: this process).
        self.execute(
            "INSERT INTO runs (run_id, kind, parent_run_id, config, status, pid, pid_started, host) "
            "VALUES (?, ?, ?, ?, 'running', ?, ?, ?) "
            "ON CONFLICT (run_id) DO UPDATE SET kind = excluded.kind, status = 'running', "
            "parent_run_id = coalesce(excluded.parent_run_id, runs.parent_run_id), "
            "config = CASE WHEN excluded.config = '{}' THEN runs.config ELSE excluded.config END, "
            "finished_at = NULL, error = NULL, pid = excluded.pid, pid_started = excluded.pid_started, "
            "host = excluded.host",
            [run_id, kind, parent_run_id, _to_json(dict(config or {})), owner.pid, owner.pid_started, owner.host],
        )
        return run_id

    def close_abandoned_runs(self) -> list[str]:
        """Mark ``abandoned`` (with the time) every ``running`` run whose process has died without
        closing it (SIGKILL, a crash; see ``data.run_owner``); return their ids. Called on every
        open for writing, so a killed run does not stay ``running`` forever."""
        if "pid" not in self.columns("runs"):  # a store held below migration 006 (tests)
            return []
        rows = self.query("SELECT run_id, pid, pid_started, host FROM runs WHERE status = 'running'")
        dead = [r for r in rows if not owner_alive(r["pid"], r["pid_started"], r["host"])]
        for row in dead:
            self.execute(
                "UPDATE runs SET status = 'abandoned', finished_at = current_timestamp, error = ? WHERE run_id = ?",
                [
                    f"abandoned: its process (pid {row['pid']} on {row['host']}) ended without closing the run "
                    "(killed?); found by a later lune command. Run the same command again to resume it",
                    row["run_id"],
                ],
            )
        return [r["run_id"] for r in dead]

    def finish_run(
        self,
        run_id: str,
        *,
        status: str = "completed",
        metrics: Mapping[str, Any] | None = None,
        artefacts: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Mark a run completed or failed, with what it measured and produced."""
        self.execute(
            "UPDATE runs SET status = ?, finished_at = current_timestamp, metrics = ?, artefacts = ?, error = ? "
            "WHERE run_id = ?",
            [status, _to_json(dict(metrics or {})), _to_json(dict(artefacts or {})), error, run_id],
        )

    @contextmanager
    def run(
        self,
        kind: str,
        config: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        parent_run_id: str | None = None,
    ) -> Iterator[RunRecord]:
        """One stage run's ``runs`` row, from start to end: the lifecycle every stage shares.

        The row is ``running`` inside the block; it is ``completed`` (with what the block put into
        ``run.metrics`` / ``run.artefacts``) when the block ends normally, and ``failed`` with the
        error's type and message (a LuneError's message alone) when anything escapes it, Ctrl-C
        included; the exception goes on.
        A block may end the run itself with ``run.fail(message)`` (a run that finished its work but
        must be reported failed, e.g. some batches failed): the row then keeps that status.

            >>> with store.run("score", {"score": cfg}) as run:
            ...     run.metrics["scored"] = score_everything()
        """
        record = RunRecord(self.start_run(kind, config, run_id=run_id, parent_run_id=parent_run_id))
        try:
            yield record
        except BaseException as err:
            # A LuneError's message is written for the user (`file:line: field: problem`): stored as the
            # CLI prints it; any other exception with its type.
            message = (
                str(err)
                if isinstance(err, LuneError)
                else f"{type(err).__name__}: {err}"
                if str(err)
                else type(err).__name__
            )[:2000]
            self.finish_run(
                record.run_id, status="failed", metrics=record.metrics, artefacts=record.artefacts, error=message
            )
            raise
        else:
            self.finish_run(
                record.run_id,
                status=record.status,
                metrics=record.metrics,
                artefacts=record.artefacts,
                error=record.error,
            )

    def reject(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write ``rejections`` rows (stage, source, location, field, reason, payload, run_id)."""
        from lune.data.ids import content_id

        prepared = []
        for row in rows:
            row = dict(row)
            payload = row.get("payload")
            if payload is not None and not isinstance(payload, str):
                payload = json.dumps(payload, ensure_ascii=False, default=str)
            row["payload"] = payload[:2000] if payload else payload
            row.setdefault(
                "rejection_id",
                content_id(
                    row.get("stage"),
                    row.get("source"),
                    row.get("location"),
                    row.get("field"),
                    row.get("reason"),
                    row.get("payload"),
                ),
            )
            prepared.append(row)
        return self.insert("rejections", prepared)

    # -- internals -------------------------------------------------------------------------------

    def _execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None) -> duckdb.DuckDBPyConnection:
        self._refuse_unless_query(sql)
        try:
            return self.con.execute(sql, params) if params is not None else self.con.execute(sql)
        except (duckdb.InvalidInputException, duckdb.PermissionException) as err:
            self._raise_read_only(err)
            raise

    def _refuse_unless_query(self, sql: str) -> None:
        """On a read-only store, refuse before it runs anything that is not one query."""
        problem = self.read_only and read_only_problem(sql)
        if problem:
            raise ReadOnlyViolation(
                f"this connection is read-only and runs one query: {problem}; "
                "change data through the lune commands or a DuckDB client opened on the file"
            )

    def _raise_read_only(self, err: duckdb.Error) -> None:
        """Turn DuckDB's refusal of a write, or of a file outside the store, on a read-only
        connection into a ReadOnlyViolation."""
        if self.read_only and isinstance(err, duckdb.PermissionException):
            raise ReadOnlyViolation(
                "this connection is read-only and reads only the store: files, network and extensions are "
                f"refused ({str(err).splitlines()[0]}); read other files with a DuckDB client of your own"
            ) from None
        if self.read_only and "read-only" in str(err).lower():
            raise ReadOnlyViolation(
                "this connection is read-only: `lune sql` only runs queries (SELECT, WITH, DESCRIBE, SHOW, ...); "
                "change data through the lune commands or a DuckDB client opened on the file"
            ) from None


def _first_per_key(batch: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Drop rows whose key repeats an earlier row of the same batch."""
    missing = [k for k in key if k not in batch.column_names]
    if missing:
        raise StoreError(f"rows lack key column(s) {missing}")
    seen: set[tuple[Any, ...]] = set()
    keep = []
    columns = [batch.column(k).to_pylist() for k in key]
    for i, values in enumerate(zip(*columns)):
        if values not in seen:
            seen.add(values)
            keep.append(i)
    return batch if len(keep) == batch.num_rows else batch.take(pa.array(keep, type=pa.int64()))
