"""The store: migrations and upgrades, idempotent Arrow writes, transactions, read-only connections,
and the error a second writer gets."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from lune.data.records import Fact
from lune.data.store import ReadOnlyViolation, Store, StoreError, StoreLockedError, available_migrations

REPO = Path(__file__).resolve().parents[1]


def a_fact(question: str = "What gender is author Basil Mahfouz Al-Kuwaiti?") -> Fact:
    return Fact(
        corpus="tofu",
        source_file="forget01.json",
        question=question,
        answer="Author Basil Mahfouz Al-Kuwaiti is male.",
        key_span="male",
        key_span_source="derived",
        split="forget",
        source_line=2,
    )


def test_fresh_file_gets_every_migration(db_path: Path) -> None:
    versions = [m.version for m in available_migrations()]
    with Store(db_path) as store:
        assert store.schema_version() == versions[-1]
        assert [r["version"] for r in store.query("SELECT version FROM schema_migrations ORDER BY 1")] == versions
        assert {
            "facts",
            "probes",
            "candidates",
            "scores",
            "embeddings",
            "curated_sets",
            "curated_items",
            "runs",
            "eval_results",
            "eval_items",
            "rejections",
        } <= set(store.tables())


def test_file_of_the_first_migration_is_upgraded_in_place(db_path: Path) -> None:
    with Store(db_path, migrate_to=1) as store:
        assert store.schema_version() == 1
        store.insert("facts", [a_fact().to_row()])
    latest = available_migrations()[-1].version
    with Store(db_path) as store:
        assert store.schema_version() == latest
        assert [r["version"] for r in store.query("SELECT version FROM schema_migrations ORDER BY 1")] == [
            m.version for m in available_migrations()
        ]
        assert store.query("SELECT question, key_span FROM facts") == [
            {"question": a_fact().question, "key_span": "male"}
        ]
    # Opening again applies nothing.
    with Store(db_path) as store:
        assert store.migrate() == []


def test_newer_file_than_this_lune_is_refused(db_path: Path) -> None:
    with Store(db_path) as store:
        store.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
    with pytest.raises(StoreError, match="newer than this lune knows"):
        Store(db_path)


def test_insert_is_idempotent_and_reports_new_rows(db_path: Path) -> None:
    rows = [a_fact().to_row(), a_fact("In which city was he born?").to_row()]
    with Store(db_path) as store:
        assert store.insert("facts", rows) == 2
        assert store.insert("facts", rows) == 0
        assert store.insert("facts", rows + rows) == 0  # duplicates inside one batch too
        table = pa.Table.from_pylist([{**rows[0], "key_span": "Al-Kuwaiti"}]).drop_columns(["extra"])
        assert store.insert("facts", table, replace=True) == 1
        assert store.scalar("SELECT key_span FROM facts WHERE fact_id = ?", [rows[0]["fact_id"]]) == "Al-Kuwaiti"
        assert store.scalar("SELECT count(*) FROM facts") == 2
        with pytest.raises(StoreError, match="no column"):
            store.insert("facts", [{**rows[0], "colour": "red"}])


def test_transaction_rolls_back_everything(db_path: Path) -> None:
    with Store(db_path) as store:
        with pytest.raises(RuntimeError), store.transaction():
            store.insert("facts", [a_fact().to_row()])
            raise RuntimeError("boom")
        assert store.scalar("SELECT count(*) FROM facts") == 0


def test_read_only_store_refuses_writes(db_path: Path) -> None:
    with Store(db_path) as store:
        store.insert("facts", [a_fact().to_row()])
    with Store(db_path, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM facts") == 1
        assert store.arrow("SELECT question FROM facts").num_rows == 1
        for statement in ("DELETE FROM facts", "CREATE TABLE t (a INT)", "UPDATE facts SET split = 'retain'"):
            with pytest.raises(ReadOnlyViolation, match="read-only"):
                store.execute(statement)
            with pytest.raises(ReadOnlyViolation, match="read-only"):
                store.arrow(statement)
    with pytest.raises(StoreError, match="no such store file"):
        Store(db_path.with_name("missing.duckdb"), read_only=True)


def _open_in_other_process(db: Path) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(f"""
        import sys
        from lune.data.store import Store, StoreLockedError
        try:
            Store({str(db)!r})
        except StoreLockedError as err:
            print(err)
            sys.exit(3)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_second_process_gets_a_clear_lock_error(db_path: Path) -> None:
    assert issubclass(StoreLockedError, StoreError)
    with Store(db_path) as store:
        store.insert("facts", [a_fact().to_row()])
        done = _open_in_other_process(db_path)
        assert done.returncode == 3, done.stderr
        message = done.stdout.strip()
        assert message.startswith(f"{db_path}: the store is open in another process")
        assert "Wait for that lune command to finish" in message
        assert "Traceback" not in done.stderr

        # The command line prints it as one line and exits 2.
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "lune.cli",
                "ingest",
                "tofu",
                str(REPO / "data" / "sample" / "tofu"),
                "--db",
                str(db_path),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert cli.returncode == 2, cli.stderr
        lines = cli.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"lune ingest: error: {db_path}: the store is open in another")
    # Once closed, the other process can open it.
    assert _open_in_other_process(db_path).returncode == 0
