"""User-supplied SQL: `lune sql` reads the store and nothing else, and a `--where` / `generate.where`
filter is one condition evaluated in a sandbox, so neither can change the store or read the machine."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from _generate_data import write_sample_store

from lune.cli import main
from lune.data import generation_queries as q
from lune.data.errors import LuneError
from lune.data.safe_sql import read_only_problem
from lune.data.store import Store

ATTACK = (
    "true); DELETE FROM facts; SELECT fact_id, corpus, subject, question, answer, key_span, split, "
    "group_name FROM facts WHERE (true"
)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contents(db: Path) -> dict[str, list]:
    with Store(db, read_only=True) as store:
        return {t: store.query(f'SELECT * FROM "{t}" ORDER BY ALL') for t in ("facts", "probes", "runs")}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("safety")
    return write_sample_store(folder / "store.duckdb"), write_sample_store(folder / "other.duckdb")


def refusals(db: Path, other: Path) -> list[str]:
    """Every statement the issue listed, and their close relatives."""
    return [
        f"COPY (SELECT 'gone' AS x) TO '{db}' (FORMAT csv)",
        f"ATTACH '{other}' AS v (READ_WRITE); DELETE FROM v.facts",
        f"ATTACH '{other}' AS v (READ_WRITE)",
        "DELETE FROM facts",
        "WITH gone AS (DELETE FROM facts RETURNING fact_id) SELECT * FROM gone",
        "SELECT content FROM read_text('/etc/shadow')",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM glob('/root/*')",
        "SELECT * FROM read_parquet('/tmp/any.parquet')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "INSTALL httpfs",
        "LOAD httpfs",
        "LOAD json",
        "SET threads = 1",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "PRAGMA table_info('facts')",
        "PRAGMA threads = 1",
        "CREATE TEMP TABLE t AS SELECT * FROM facts",
        "CREATE TEMP VIEW tv AS SELECT 1",
        f"EXPORT DATABASE '{db.parent / 'exported'}'",
        "COPY facts FROM '/etc/passwd'",
        "CALL pragma_version()",
        "CHECKPOINT",
        "BEGIN TRANSACTION",
        "SELECT 1; SELECT 2",
    ]


def test_lune_sql_refuses_every_escape_and_changes_nothing(stores, capsys: pytest.CaptureFixture[str]) -> None:
    db, other = stores
    before, before_other = digest(db), digest(other)
    rows, rows_other = contents(db), contents(other)
    for statement in refusals(db, other):
        assert main(["sql", statement, "--db", str(db)]) == 2, statement
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lune sql: error: this connection is read-only"), (statement, err)
        assert captured.out == "", statement
        assert "root:" not in captured.err and "Traceback" not in captured.err
    assert digest(db) == before and digest(other) == before_other
    assert contents(db) == rows and contents(other) == rows_other
    assert not (db.parent / "exported").exists()


def test_lune_sql_still_answers_queries_and_views(stores, capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = stores
    for statement, expected in [
        ("SELECT count(*) AS n FROM facts", "n\n---\n303\n(1 row)"),
        ("WITH f AS (SELECT split FROM facts) SELECT count(DISTINCT split) AS n FROM f", "n\n-\n3\n(1 row)"),
    ]:
        assert main(["sql", statement, "--db", str(db)]) == 0
        assert capsys.readouterr().out.strip() == expected
    for statement in (
        "DESCRIBE facts",
        "SHOW TABLES",
        "SUMMARIZE facts",
        "FROM v_facts_by_split",
        "SELECT * FROM v_candidates_per_fact",
        "SELECT * FROM duckdb_settings() LIMIT 1",
    ):
        assert main(["sql", statement, "--db", str(db), "--format", "csv"]) == 0, capsys.readouterr().err
        assert capsys.readouterr().out


def test_read_only_problem_is_decided_by_the_parser() -> None:
    assert read_only_problem("SELECT 1") is None
    assert read_only_problem("WITH x AS (SELECT 1) SELECT * FROM x") is None
    assert read_only_problem("SELEC 1") is None  # DuckDB's own parser error says where
    assert "2 statements" in read_only_problem("SELECT 1; DELETE FROM facts")
    assert read_only_problem("PRAGMA version").startswith("PRAGMA statements are refused")
    with Store(":memory:") as store:  # a writable store runs anything, as before
        store.execute("SET threads = 1")


def test_the_where_attack_is_refused_and_deletes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = write_sample_store(tmp_path / "lune.duckdb")
    rows = contents(db)
    assert main(["generate", "--split", "all", "--where", ATTACK, "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lune generate: error: generate.where (--where) ")
    assert "is not one SQL condition" in err[0]
    assert contents(db) == rows


@pytest.mark.parametrize(
    "condition, problem",
    [
        (ATTACK, "is not one SQL condition"),
        ("true; DELETE FROM facts", "is not one SQL condition"),
        (
            "fact_id IN (WITH gone AS (DELETE FROM facts RETURNING fact_id) SELECT fact_id FROM gone)",
            "is not a valid condition",
        ),
        ("fact_id IN (SELECT content FROM read_text('/etc/shadow'))", "is not a valid condition"),
        ("EXISTS (SELECT 1 FROM probes)", "is not a valid condition"),
        ("no_such_column = 1", "is not a valid condition on table facts"),
    ],
)
def test_a_where_filter_is_one_condition_run_in_a_sandbox(tmp_path: Path, condition: str, problem: str) -> None:
    db = write_sample_store(tmp_path / "lune.duckdb")
    rows, before = contents(db), digest(db)
    with Store(db) as store:
        with pytest.raises(LuneError, match=r"^generate\.where \(--where\) .*" + problem):
            q.select_facts(store, where=condition)
        with pytest.raises(LuneError, match=problem):
            q.count_facts(store, split="forget", where=condition)
        # a good condition still filters, on every column of facts
        tofu = q.select_facts(store, split="forget", where="corpus = 'tofu' AND source_line <= 3")
        assert [f["fact_id"] for f in tofu] == sorted(f["fact_id"] for f in tofu) and len(tofu) == 3
        assert q.count_facts(store, where="  split = 'utility'  ") == q.count_facts(store, split="utility") > 0
    assert contents(db) == rows and digest(db) == before
