"""The whole pipeline through `lune run`, as a user runs it: in a subprocess, on a small slice of
the shipped sample. The resume test kills the process group (the Prefect server with it) while
unlearning runs, reruns, and checks the results match an uninterrupted run with no duplicate rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

SAMPLE_TOFU = Path(__file__).resolve().parents[1] / "data" / "sample" / "tofu"

pytestmark = pytest.mark.slow

TABLES = ("facts", "probes", "candidates", "scores", "curated_sets", "curated_items", "eval_results", "eval_items",
          "rejections")


def small_sample(folder: Path) -> Path:
    """One forget author, two retain authors and ten utility facts, in TOFU's own file layout."""
    folder.mkdir(parents=True)
    keep = {"forget01.json": 20, "forget01_perturbed.json": 20, "retain99.json": None, "retain_perturbed.json": 40,
            "world_facts.json": 10, "world_facts_perturbed.json": 10}
    retain_questions: set[str] = set()
    for name in ("retain_perturbed.json", "forget01.json", "forget01_perturbed.json", "world_facts.json",
                 "world_facts_perturbed.json"):
        lines = (SAMPLE_TOFU / name).read_text(encoding="utf-8").splitlines()[: keep[name]]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        if name == "retain_perturbed.json":
            retain_questions = {json.loads(line)["question"] for line in lines}
    retain = [line for line in (SAMPLE_TOFU / "retain99.json").read_text(encoding="utf-8").splitlines()
              if line.strip() and json.loads(line)["question"] in retain_questions]
    (folder / "retain99.json").write_text("\n".join(retain) + "\n", encoding="utf-8")
    return folder


def write_config(tmp: Path) -> Path:
    data = small_sample(tmp / "tofu")
    config = {
        "workdir": str(tmp / "work"),
        "ingest": {"sources": [{"format": "tofu", "path": str(data), "forget": "forget01"}]},
        "teach": {"epochs": 4, "min_steps": 80, "batch_size": 16, "check_recall": False, "tiny": {"vocab_size": 1024}},
        "unlearn": {"max_steps": 40, "eval_every": 10, "retain_anchor": "nll", "monitor_retain": 16},
        "evaluate": {"max_per_set": 40, "plots": False},
        "generate": {"n": 1},
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def lune(args: list[str], cwd: Path, **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lune.cli", *args], cwd=cwd, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **popen)


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def stored(db: Path) -> dict[str, object]:
    from lune.data.store import Store

    with Store(db, read_only=True) as store:
        counts = {t: store.scalar(f"SELECT count(*) FROM {t}") for t in TABLES}
        stage_runs = store.query("SELECT kind, count(*) AS n FROM runs WHERE parent_run_id IS NOT NULL "
                                 "AND kind <> 'pipeline' GROUP BY kind ORDER BY kind")
    return {"counts": counts, "stage_runs": stage_runs}


def metrics_of(work: Path) -> dict[str, object]:
    results = json.loads((work / "report" / "results.json").read_text(encoding="utf-8"))
    return results["metrics"]


def test_lune_run_resumes_after_a_kill_during_unlearning(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    killed_db, clean_db = tmp_path / "killed.duckdb", tmp_path / "clean.duckdb"

    proc = lune(["run", str(config), "--db", str(killed_db)], tmp_path, start_new_session=True)
    seen = []
    deadline = time.monotonic() + 900
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "[unlearn:lune] started" in line:
            time.sleep(3)  # inside the training loop
            os.killpg(proc.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "".join(seen[-50:])
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-50:])
    assert not (tmp_path / "work" / "report" / "results.json").exists()

    resumed = finish(lune(["run", str(config), "--db", str(killed_db)], tmp_path))
    for stage in ("ingest", "generate", "score", "curate", "export", "teach"):
        assert f"[{stage}] already completed" in resumed, resumed[-3000:]
    assert "[unlearn:lune] started" in resumed
    resumed_metrics = metrics_of(tmp_path / "work")

    finish(lune(["run", str(config), "--db", str(clean_db), "--fresh"], tmp_path))
    clean_metrics = metrics_of(tmp_path / "work")

    assert resumed_metrics == clean_metrics
    killed, clean = stored(killed_db), stored(clean_db)
    assert killed["counts"] == clean["counts"]
    # One completed run per stage: the killed unlearning run was resumed under the same id.
    assert killed["stage_runs"] == clean["stage_runs"]

    # A completed pipeline run replays its results without running any stage again.
    replay = finish(lune(["run", str(config), "--db", str(killed_db)], tmp_path))
    assert "[evaluate] already completed" in replay
    assert "USR" in replay and "report:" in replay


def test_sigterm_stops_the_run_and_its_prefect_server(tmp_path: Path) -> None:
    """`kill` (SIGTERM) on `lune run`: the process ends like on Ctrl-C, the running stage is marked
    failed, and nothing of its process group (Prefect's temporary server) is left behind."""
    from lune.data.store import Store

    config = write_config(tmp_path)
    db = tmp_path / "lune.duckdb"
    proc = lune(["run", str(config), "--db", str(db)], tmp_path, start_new_session=True)
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "[teach] started" in line:
            time.sleep(2)
            proc.send_signal(signal.SIGTERM)  # the lune process only, as `kill PID` does
            break
    proc.wait(timeout=120)
    time.sleep(2)  # the server's own shutdown
    try:
        os.killpg(proc.pid, 0)
        left_behind = True
        os.killpg(proc.pid, signal.SIGKILL)  # so that reading the pipe below ends
    except ProcessLookupError:
        left_behind = False
    output = "".join(seen + proc.stdout.readlines())
    assert not left_behind, "a process of the group (Prefect's server) outlived `lune run`"
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted; what was stored so far is kept" in output
    with Store(db, read_only=True) as store:
        teach = store.query("SELECT status FROM runs WHERE kind = 'teach'")
    assert [row["status"] for row in teach] == ["failed"]
