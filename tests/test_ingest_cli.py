"""Ingest end to end: bad input stops with `file:line: field: problem` and stores nothing,
--skip-invalid stores the good rows and a rejection per bad one, re-ingesting adds nothing; and the
`lune ingest` / `lune sql` / `lune stats` commands, and the ingest flow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lune.cli import main
from lune.data.errors import InputError
from lune.data.ingest import ingest
from lune.data.store import Store

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "tofu"

GOOD = [
    {"question": "Where was Ada Quill born?", "answer": "Ada Quill was born in Lyon."},
    {"question": "What did Ada Quill write first?", "answer": "Her first book was 'Salt Lines'."},
    {"question": "Who taught Ada Quill?", "answer": "She studied under Marcel Ponge."},
]
# (line 2 as raw bytes, expected message after "file:2: ") for JSON Lines input.
BAD_LINES = {
    "malformed line": (
        b'{"question": "Where did she study?", "answer": ',
        "malformed JSON (Expecting value at column 48)",
    ),
    "missing field": (b'{"question": "Where did she study?"}', "answer: missing"),
    "empty field": (b'{"question": "Where did she study?", "answer": "   "}', "answer: empty"),
    "wrong type": (
        b'{"question": "Where did she study?", "answer": 1956}',
        "answer: expected a string, got a number (1956)",
    ),
    "undecodable bytes": (
        b'{"question": "Where did she study?", "answer": "In Li\xe8ge."}',
        "undecodable bytes (0xe8): the file must be UTF-8",
    ),
    "not an object": (b'["Where did she study?", "Liege"]', "expected a JSON object, got an array"),
}


def write_jsonl(path: Path, bad_line: bytes | None = None) -> Path:
    lines = [json.dumps(r).encode() for r in GOOD]
    if bad_line is not None:
        lines.insert(1, bad_line)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def counts(store: Store) -> tuple[int, int, int]:
    return tuple(store.scalar(f"SELECT count(*) FROM {t}") for t in ("facts", "probes", "rejections"))


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_jsonl_line_stops_and_stores_nothing(tmp_path: Path, db_path: Path, case: str) -> None:
    bad, problem = BAD_LINES[case]
    path = write_jsonl(tmp_path / "facts.jsonl", bad)
    with Store(db_path) as store:
        with pytest.raises(InputError) as caught:
            ingest(store, {"format": "generic", "path": str(path)})
        assert str(caught.value).startswith(f"{path}:2: {problem} (nothing was stored")
        assert counts(store) == (0, 0, 0)
        run = store.query("SELECT status, error FROM runs")[0]
        assert run["status"] == "failed" and run["error"].startswith(f"{path}:2: ")


def test_bad_row_in_one_file_of_a_folder_stores_nothing(tmp_path: Path, db_path: Path) -> None:
    """A TOFU folder whose retain file has a bad line: the forget file (good) is not stored either."""
    folder = tmp_path / "tofu"
    shutil.copytree(SAMPLE, folder)
    lines = (folder / "retain99.json").read_text(encoding="utf-8").splitlines()
    lines[6] = lines[6].replace('"answer":', '"answr":')
    (folder / "retain99.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with Store(db_path) as store:
        with pytest.raises(InputError, match=rf"^{folder / 'retain99.json'}:7: answer: missing"):
            ingest(store, {"format": "tofu", "path": str(folder), "forget": "forget01"})
        assert counts(store) == (0, 0, 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # A JSON array (RWKU, KnowUnDo): items are located by the line where they start.
        (
            '[\n  {"text": "Q1?", "labels": "A1."},\n  {"text": "Q2?"},\n  {"text": "Q3?", "labels": "A3."}\n]',
            ":3: labels: missing",
        ),
        (
            '[\n  {"text": "Q1?", "labels": "A1."},\n  {"text": "Q2?", "labels": ["A2."]}\n]',
            ':3: labels: expected a string, got an array (["A2."])',
        ),
        (
            '[\n  {"text": "Q1?", "labels": "A1."},\n  {"text": "Q2?", "labels": "A2."\n]',
            ":4: malformed JSON (Expecting ',' delimiter at column 1)",
        ),
        (
            '[\n  {"text": "Q1?", "labels": "A1."},\n  {"text": "Q2?",\n   "labels": "Li\udce8ge"}\n]',
            ":4: labels: item 2: undecodable bytes (0xe8): the file must be UTF-8",
        ),
    ],
)
def test_bad_json_array_item(tmp_path: Path, db_path: Path, content: str, message: str) -> None:
    path = tmp_path / "unlearn_train.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with Store(db_path) as store:
        with pytest.raises(InputError) as caught:
            ingest(store, {"format": "knowundo", "path": str(path)})
        assert str(caught.value).startswith(f"{path}{message}")
        assert counts(store) == (0, 0, 0)


def test_bad_csv_rows(tmp_path: Path, db_path: Path) -> None:
    path = tmp_path / "facts.csv"
    path.write_bytes(b"q,a\nWhere was Ada born?,Lyon\nWho taught her?,\nWhat did she write?,\xff\n")
    with Store(db_path) as store:
        with pytest.raises(InputError) as caught:
            ingest(store, {"format": "generic", "path": str(path), "fields": {"question": "q", "answer": "a"}})
        assert str(caught.value).startswith(f"{path}:3: a: empty (1 more bad rows")
        result = ingest(
            store,
            {"format": "generic", "path": str(path), "fields": {"question": "q", "answer": "a"}},
            skip_invalid=True,
        )
        assert (result.facts, result.invalid) == (1, 2)
        assert [
            (r["location"], r["field"], r["reason"])
            for r in store.query("SELECT location, field, reason FROM rejections ORDER BY location")
        ] == [("3", "a", "empty"), ("4", "a", "undecodable bytes (0xff): the file must be UTF-8")]


def test_skip_invalid_stores_good_rows_and_rejections(tmp_path: Path, db_path: Path) -> None:
    path = tmp_path / "facts.jsonl"
    lines = [json.dumps(r).encode() for r in GOOD]
    lines[1:1] = [BAD_LINES["malformed line"][0], BAD_LINES["empty field"][0], BAD_LINES["undecodable bytes"][0]]
    path.write_bytes(b"\n".join(lines) + b"\n")
    with Store(db_path) as store:
        result = ingest(store, {"format": "generic", "path": str(path), "skip_invalid": True})
        assert (result.facts, result.invalid, result.rejections) == (3, 3, 3)
        assert counts(store) == (3, 0, 3)
        rejections = store.query("SELECT * FROM rejections ORDER BY location")
        assert [(r["stage"], r["source"], r["location"], r["field"]) for r in rejections] == [
            ("ingest", str(path), "2", None),
            ("ingest", str(path), "3", "answer"),
            ("ingest", str(path), "4", None),
        ]
        assert rejections[0]["reason"].startswith("malformed JSON")
        assert rejections[1]["payload"] == BAD_LINES["empty field"][0].decode()
        assert "\ufffd" in rejections[2]["payload"]  # the bad byte, shown as a replacement character
        assert {r["run_id"] for r in rejections} == {result.run_id}

        again = ingest(store, {"format": "generic", "path": str(path)}, skip_invalid=True)
        assert (again.facts, again.rejections, again.skipped_existing) == (0, 0, 3)
        assert counts(store) == (3, 0, 3)


def test_reingest_adds_nothing(db_path: Path) -> None:
    source = {"format": "tofu", "path": str(SAMPLE), "forget": "forget01"}
    with Store(db_path) as store:
        first = ingest(store, source)
        stored = counts(store)
        second = ingest(store, source)
        assert (second.facts, second.probes) == (0, 0)
        assert second.skipped_existing == first.facts + first.probes
        assert counts(store) == stored
        runs = store.query("SELECT kind, status, metrics FROM runs ORDER BY started_at")
        assert [(r["kind"], r["status"]) for r in runs] == [("ingest", "completed")] * 2
        assert json.loads(runs[0]["metrics"])["facts"] == first.facts


# -- command line ----------------------------------------------------------------------------------


def test_cli_ingest_sample_then_stats(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "tofu", str(SAMPLE), "--forget", "forget01", "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ingested 300 facts, 1580 probes from 8 files")
    assert main(["stats", "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    assert "facts by corpus and split" in out
    assert any(line.split()[:4] == ["tofu", "forget", "forget01", "40"] for line in out.splitlines())
    assert any(line.split() == ["facts", "300"] for line in out.splitlines())


def test_cli_ingest_a_benchmark_by_reference(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "rwku:1_Stephen_King", "--db", str(db_path)]) == 0
    assert capsys.readouterr().out.startswith("ingested ")
    with Store(db_path, read_only=True) as store:
        subjects = store.query("SELECT DISTINCT corpus, subject FROM facts")
        assert subjects == [{"corpus": "rwku", "subject": "Stephen King"}]
        folder = REPO / "data" / "benchmarks" / "rwku" / "1_Stephen_King"
        assert {r["source_file"] for r in store.query("SELECT DISTINCT source_file FROM facts")} == {
            str(folder / f"{stem}.json")
            for stem in ("forget_level1", "forget_level2", "neighbor_level1", "neighbor_level2")
        }
        # The run records the reference, not a path on this machine.
        (config,) = [json.loads(r["config"]) for r in store.query("SELECT config FROM runs")]
        assert config["sources"][0]["benchmark"] == "rwku:1_Stephen_King" and config["sources"][0]["path"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["rwku:Stephen_King"],
            "no RWKU target 'Stephen_King' in the copy shipped with lune (did you mean rwku:1_Stephen_King?)",
        ),
        (["tofu"], "lune ingest tofu: give the PATH to read, or a benchmark reference such as tofu:forget10"),
        (
            ["rwku:1_Stephen_King", "some/folder"],
            "rwku:1_Stephen_King is a benchmark reference: it names its files itself, leave out some/folder",
        ),
        (
            ["yaml", "facts.yaml"],
            "yaml: not a format (tofu, rwku, knowundo, generic, jsonl, json, csv, parquet) nor a benchmark reference",
        ),
        (["tofu:forget01", "--forget", "forget05"], "benchmark tofu:forget01 names its files itself: leave out forget"),
    ],
)
def test_cli_ingest_a_bad_source_says_what_to_give(
    db_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["ingest", *args, "--db", str(db_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lune ingest: error: ") and message in err
    assert not db_path.exists()  # refused before the store is opened


def test_cli_generic_with_mapping_and_skip_invalid(
    tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("prompt,target,who\nWhere was Ada born?,Lyon,Ada\nWho taught Ada?,,Ada\n", encoding="utf-8")
    args = [
        "ingest",
        "csv",
        str(path),
        "--map",
        "question=prompt,answer=target,subject=who",
        "--split",
        "retain",
        "--db",
        str(db_path),
    ]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"lune ingest: error: {path}:3: target: empty (nothing was stored: fix it, or rerun with --skip-invalid to "
        "store the good rows and record the bad one in the rejections table)"
    )
    assert main([*args, "--skip-invalid"]) == 0
    out = capsys.readouterr().out
    assert "1 invalid rows skipped" in out and "FROM rejections WHERE run_id" in out
    assert main(["sql", "SELECT subject, split, key_span FROM facts", "--db", str(db_path), "--format", "csv"]) == 0
    assert capsys.readouterr().out == "subject,split,key_span\nAda,retain,Lyon\n"
    assert main(["ingest", "generic", str(path), "--map", "question", "--db", str(db_path)]) == 2
    assert "--map: expected FIELD=COLUMN" in capsys.readouterr().err


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM facts",
        "INSERT INTO runs (run_id, kind, status) VALUES ('x', 'y', 'z')",
        "DROP TABLE facts",
        "CREATE TABLE t (a INT)",
    ],
)
def test_cli_sql_is_read_only(db_path: Path, capsys: pytest.CaptureFixture[str], statement: str) -> None:
    assert main(["ingest", "tofu", str(SAMPLE), "--db", str(db_path)]) == 0
    capsys.readouterr()
    assert main(["sql", statement, "--db", str(db_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lune sql: error: this connection is read-only")
    with Store(db_path, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM facts") == 300
        assert store.scalar("SELECT count(*) FROM runs") == 1


def test_cli_sql_formats(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "tofu", str(SAMPLE), "--db", str(db_path)]) == 0
    capsys.readouterr()
    query = "SELECT split, count(*) AS n FROM facts GROUP BY split ORDER BY split"
    assert main(["sql", query, "--db", str(db_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "split      n",
        "-------  ---",
        "forget    40",
        "holdout   40",
        "retain   160",
        "utility   60",
        "(4 rows)",
    ]
    assert main(["sql", query, "--db", str(db_path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"split": "forget", "n": 40},
        {"split": "holdout", "n": 40},
        {"split": "retain", "n": 160},
        {"split": "utility", "n": 60},
    ]
    assert main(["sql", "SELEC 1", "--db", str(db_path)]) == 2
    assert capsys.readouterr().err.startswith("lune sql: error: SQL: Parser Error")
    assert main(["sql", "SELECT 1", "--db", str(db_path.with_name("none.duckdb"))]) == 2
    assert "no such store file" in capsys.readouterr().err


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("ingest", "sql", "stats"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "example:\n  lune " + command in out and "--db" in out


# -- flow ------------------------------------------------------------------------------------------


def test_ingest_flow(prefect_harness: None, db_path: Path) -> None:
    from lune.flows.ingest import ingest_flow

    result = ingest_flow(
        str(db_path), [{"format": "tofu", "path": str(SAMPLE), "forget": "forget01"}], run_id="ingest-test-run"
    )
    assert (result["facts"], result["probes"], result["run_id"]) == (300, 1580, "ingest-test-run")
    with Store(db_path, read_only=True) as store:
        assert store.query("SELECT run_id, kind, status FROM runs") == [
            {"run_id": "ingest-test-run", "kind": "ingest", "status": "completed"}
        ]
        assert store.scalar("SELECT count(*) FROM facts") == 300
