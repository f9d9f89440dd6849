"""Faults a user meets: threads sharing a cache, a killed run (its `runs` row, its Prefect server, its
resumption), a full disk, a folder that cannot be written, a config path that is a folder, an export
onto a file, and inputs that used to be skipped or refused without a word. Each through the public
`lune` command line in a subprocess where the fault needs one."""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from _generate_data import sample_facts_and_probes, write_sample_store

from lune.data.store import Store
from lune.generators.rules.spans import SpanBank
from lune.leftovers import SERVER_APP

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "tofu"
GENERATE = ["generate", "--batch-size", "1", "--workers", "4", "--n", "3"]


# `lune` with the interpreter switching threads every 10 us instead of 5 ms: a race between the
# generation workers then shows on the small shipped sample as it does on TOFU full (two runs with
# the unlocked span bank differed in 591 of 1,166 candidate ids).
STRESSED = "import sys; sys.setswitchinterval(1e-5); from lune.cli import main; sys.exit(main(sys.argv[1:]))"


def lune(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PREFECT_LOGGING_LEVEL": "INFO"}
    command = ["-c", STRESSED] if args[0] == "generate" else ["-m", "lune.cli"]
    return subprocess.Popen(
        [sys.executable, *command, *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **popen,
    )


def run_lune(args: list[str], cwd: Path, timeout: float = 600, **popen) -> subprocess.CompletedProcess[str]:
    proc = lune(args, cwd, **popen)
    out, _ = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def candidate_ids(db: Path) -> set[str]:
    with Store(db, read_only=True) as store:
        return {r["candidate_id"] for r in store.query("SELECT candidate_id FROM candidates")}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_line(out: str, command: str) -> str:
    lines = [line for line in out.strip().splitlines() if line.startswith(f"lune {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in out, out[-3000:]
    return lines[0]


# -- item 3: generation is the same with several workers ----------------------------------------


def test_span_bank_index_is_built_once_when_threads_race() -> None:
    """Before the lock, threads that found the index empty all filled it: it doubled (and the spans
    drawn, hence the candidate ids, changed from run to run). A tiny switch interval makes the race
    certain on the shipped sample."""
    rows = [f.to_row() for f in sample_facts_and_probes()[0]]
    spans = sum(len(v) for v in SpanBank.from_facts(rows).spans.values())
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(20):
            bank = SpanBank.from_facts(rows)
            barrier = threading.Barrier(4)

            def use(bank: SpanBank = bank, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                bank.pool("person", "Basil Mahfouz Al-Kuwaiti")
                bank.related_rows(None, "Who is Basil Mahfouz Al-Kuwaiti?")

            threads = [threading.Thread(target=use) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sum(len(v) for v in bank._by_bucket.values()) == spans
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.slow
def test_generation_is_deterministic_with_workers_and_survives_a_kill(tmp_path: Path) -> None:
    """Two runs with four workers store the same candidate ids; a run killed with SIGKILL mid-way
    leaves its `runs` row to be marked abandoned by the next command, leaves Prefect's server to be
    stopped by it, and resumed gives the ids of an uninterrupted run."""
    first, second, killed = (write_sample_store(tmp_path / f"{n}.duckdb") for n in ("first", "second", "killed"))
    for db in (first, second):
        done = run_lune([*GENERATE, "--db", str(db)], tmp_path)
        assert done.returncode == 0, done.stdout[-3000:]
    reference = candidate_ids(first)
    assert len(reference) > 1000 and candidate_ids(second) == reference

    # Kill the lune process alone (not its group) once a few batches are stored, as the OOM killer would.
    proc = lune([*GENERATE, "--db", str(killed)], tmp_path, start_new_session=True)
    seen: list[str] = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if re.search(r"batch [3-9]/\d+ done", line):
            left = [c for c in psutil.Process(proc.pid).children() if SERVER_APP in c.cmdline()]
            proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "".join(seen[-30:])
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-30:])
    assert len(left) == 1 and left[0].environ().get("PREFECT__SERVER_EPHEMERAL") == "1"
    with Store(killed, read_only=True) as store:
        assert [r["status"] for r in store.query("SELECT status FROM runs WHERE kind = 'generate'")] == ["running"]
        partial = store.scalar("SELECT count(*) FROM generation_batches")
    assert 0 < partial < 43

    stats = run_lune(["stats", "--db", str(killed)], tmp_path)
    assert stats.returncode == 0 and "abandoned" in stats.stdout, stats.stdout

    # (any other lune command started meanwhile on this machine stops the server too: hence the `if`)
    still_left = [p for p in left if _alive(p)]
    resumed = run_lune([*GENERATE, "--db", str(killed)], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    if still_left:
        assert "lune: stopped a Prefect temporary server left behind by a killed lune process" in resumed.stdout
    assert re.search(rf"\({partial} already complete\)", resumed.stdout), resumed.stdout[-2000:]
    assert not any(_alive(p) for p in left)
    assert candidate_ids(killed) == reference
    with Store(killed, read_only=True) as store:
        runs = store.query("SELECT status, error, finished_at FROM runs WHERE kind = 'generate' ORDER BY started_at")
    assert [r["status"] for r in runs] == ["abandoned", "completed"]
    assert "ended without closing the run" in runs[0]["error"] and runs[0]["finished_at"] is not None


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- item 5: runs that never close ---------------------------------------------------------------


def test_a_server_left_behind_is_stopped_by_the_next_command(tmp_path: Path) -> None:
    """A process that looks like Prefect's temporary server (its command line and environment),
    orphaned as SIGKILL of its lune process leaves it, is stopped and reported by the next command.
    (Any lune command started meanwhile on this machine may stop it first: then try again.)"""
    fake = [sys.executable, "-c", "import time; time.sleep(120)", "--factory", SERVER_APP, "--port", "8999"]
    spawn = (
        "import os, subprocess, sys; "
        f"p = subprocess.Popen({fake!r}, env={{**os.environ, 'PREFECT__SERVER_EPHEMERAL': '1'}}, "
        "stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, "
        "start_new_session=True); print(p.pid)"
    )  # the parent exits at once: init adopts the child
    for _ in range(5):
        pid = int(subprocess.run([sys.executable, "-c", spawn], capture_output=True, text=True, check=True).stdout)
        server = psutil.Process(pid)
        try:
            done = run_lune(["curate", "--config", "missing.yaml", "--db", str(tmp_path / "lune.duckdb")], tmp_path)
            if f"left behind by a killed lune process (pid {pid}, port 8999)" in done.stdout:
                assert not _alive(server)
                return
        finally:
            if _alive(server):
                server.kill()
    pytest.fail(f"the orphaned server was never reported as stopped: {done.stdout}")


def test_a_running_row_of_a_dead_process_is_marked_abandoned(db_path: Path) -> None:
    with Store(db_path) as store:
        mine = store.start_run("score")
        store.start_run("generate", run_id="dead-run")
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
        )
        store.execute("UPDATE runs SET pid = ? WHERE run_id = 'dead-run'", [int(dead.stdout)])
        store.start_run("teach", run_id="other-host")
        store.execute("UPDATE runs SET pid = 1, host = 'elsewhere' WHERE run_id = 'other-host'")
        store.start_run("unlearn", run_id="reused-pid")  # a live pid (ours) that started before the run's owner
        store.execute("UPDATE runs SET pid_started = pid_started + 3600 WHERE run_id = 'reused-pid'")
    with Store(db_path) as store:
        status = {r["run_id"]: r["status"] for r in store.query("SELECT run_id, status FROM runs")}
        assert status == {mine: "running", "dead-run": "abandoned", "other-host": "running", "reused-pid": "abandoned"}
        assert store.scalar("SELECT finished_at IS NOT NULL FROM runs WHERE run_id = 'dead-run'")


# -- item 6: tracebacks instead of errors --------------------------------------------------------


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    db = write_sample_store(tmp_path / "lune.duckdb", rwku=False)
    with Store(db, read_only=True) as store:
        before = store.query("SELECT * FROM facts ORDER BY fact_id")
    # A file-size limit stands in for a full disk: the store's write-ahead log cannot grow.
    done = run_lune(
        ["ingest", "tofu", str(SAMPLE), "--corpus", "more", "--db", str(db)],
        tmp_path,
        preexec_fn=_limit_file_size(64 * 1024),
    )
    assert done.returncode == 2, done.stdout[-3000:]
    line = error_line(done.stdout, "ingest")
    assert str(db) in line and "the disk is full" in line and "run the same command again" in line
    with Store(db) as store:  # what was stored before is intact; each input file is one transaction
        assert store.query("SELECT * FROM facts WHERE corpus = 'tofu' ORDER BY fact_id") == before
        assert store.scalar("SELECT count(*) FROM facts WHERE corpus = 'more'") < 300
    again = run_lune(["ingest", "tofu", str(SAMPLE), "--corpus", "more", "--db", str(db)], tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    with Store(db, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM facts WHERE corpus = 'more'") == 300


def _read_only_folder(folder: Path) -> None:
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    # root ignores permissions: an immutable folder refuses new files (the write-ahead log) to root too
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (no chattr +i)")


def _writable_again(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=False)
    folder.chmod(0o755)


def test_a_read_only_store_folder_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "shelf"
    folder.mkdir()
    db = write_sample_store(folder / "lune.duckdb", rwku=False)
    before = digest(db)
    _read_only_folder(folder)
    try:
        done = run_lune(["ingest", "tofu", str(SAMPLE), "--corpus", "more", "--db", str(db)], tmp_path)
        assert done.returncode == 2, done.stdout[-3000:]
        line = error_line(done.stdout, "ingest")
        assert f"{db}.wal" in line and "read-only" in line and "point --db at the copy" in line
        assert digest(db) == before
        # reading still works
        shown = run_lune(["sql", "SELECT count(*) AS n FROM facts", "--db", str(db)], tmp_path)
        assert shown.returncode == 0 and "300" in shown.stdout, shown.stdout
    finally:
        _writable_again(folder)


def test_a_config_path_that_is_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    for args, command in (
        (["run", "configs"], "run"),
        (["generate", "--config", "configs"], "generate"),
        (["curate", "--config", "configs"], "curate"),
    ):
        done = run_lune([*args, "--db", str(tmp_path / "lune.duckdb")], tmp_path)
        assert done.returncode == 2, done.stdout[-3000:]
        assert "configs: is a folder, not a config file" in error_line(done.stdout, command)


def test_export_onto_a_file_is_a_clear_error_and_keeps_the_file(tmp_path: Path) -> None:
    db = write_sample_store(tmp_path / "lune.duckdb", rwku=False)
    with Store(db) as store:
        store.insert("curated_sets", [{"set_id": "s1", "name": "kept", "version": 1, "policy": "{}", "counts": "{}"}])
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    for out in (target, target / "inside"):
        done = run_lune(["export", "--name", "kept", "--out", str(out), "--db", str(db)], tmp_path)
        assert done.returncode == 2, done.stdout[-3000:]
        line = error_line(done.stdout, "export")
        assert f"{target} is a file" in line and "give --out a folder path" in line
    assert target.read_text() == "mine\n"


# -- item 7: silent no-ops -----------------------------------------------------------------------


def test_curate_refuses_a_set_with_nothing_to_train_on(tmp_path: Path) -> None:
    db = write_sample_store(tmp_path / "lune.duckdb", rwku=False)  # facts, nothing generated or scored
    done = run_lune(["curate", "--db", str(db)], tmp_path)
    assert done.returncode == 2, done.stdout[-3000:]
    assert "would hold no negative or refusal to train on" in error_line(done.stdout, "curate")
    with Store(db, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM curated_sets") == 0
        assert store.query("SELECT status FROM runs WHERE kind = 'curate'") == [{"status": "failed"}]


@pytest.mark.parametrize("name", ["../../x", "a/b", "/abs", ".hidden", ""])
def test_a_curated_set_name_is_an_identifier(tmp_path: Path, name: str) -> None:
    db = write_sample_store(tmp_path / "lune.duckdb", rwku=False)
    done = run_lune(["curate", "--name", name, "--db", str(db)], tmp_path)
    assert done.returncode == 2, done.stdout[-3000:]
    assert "name" in error_line(done.stdout, "curate")
    assert not (tmp_path.parent / "x").exists()


def test_inputs_that_used_to_be_skipped_or_refused_line_by_line(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "facts.jsonl").write_text('{"question": "Where was Ada born?", "answer": "In Lyon."}\n')
    (folder / "notes.txt").write_text("not data\n")
    (folder / "slides.pdf").write_bytes(b"%PDF-1.4")
    db = tmp_path / "lune.duckdb"
    done = run_lune(["ingest", "generic", str(folder), "--db", str(db)], tmp_path)
    assert done.returncode == 0, done.stdout
    assert "skipped 2 file(s)" in done.stdout and "notes.txt, slides.pdf" in done.stdout

    array = tmp_path / "array.jsonl"
    array.write_text('[\n{"question": "Q1?", "answer": "A1"},\n{"question": "Q2?", "answer": "A2"}\n]\n')
    done = run_lune(["ingest", "generic", str(array), "--db", str(db)], tmp_path)
    assert done.returncode == 2
    line = error_line(done.stdout, "ingest")
    assert line.startswith(f"lune ingest: error: {array}: this file is a JSON array")

    for name, text in (("empty.jsonl", ""), ("blank.csv", ""), ("spaces.json", "   \n")):
        empty = tmp_path / name
        empty.write_text(text)
        done = run_lune(["ingest", "generic", str(empty), "--db", str(db)], tmp_path)
        assert "the file held no rows" in error_line(done.stdout, "ingest"), name
