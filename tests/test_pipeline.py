"""The whole pipeline through `lune run`, as a user runs it: in a subprocess, on a small slice of
the shipped sample. The resume test kills the process group (the Prefect server with it) while
unlearning runs, reruns, and checks the results match an uninterrupted run with no duplicate rows.
First, fast: the stage runner's lifecycle of a stage row, and resumption by run id, on a real store."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

SAMPLE_TOFU = Path(__file__).resolve().parents[1] / "data" / "sample" / "tofu"

TABLES = (
    "facts",
    "probes",
    "candidates",
    "scores",
    "curated_sets",
    "curated_items",
    "eval_results",
    "eval_items",
    "rejections",
)


def test_stage_runner_runs_a_stage_once_and_keeps_what_the_stage_recorded(tmp_path: Path) -> None:
    from lune.data.store import Store
    from lune.flows.pipeline import StageRunner, stage_run_id

    db = tmp_path / "lune.duckdb"
    said: list[str] = []
    calls: list[str] = []

    def score(run_id: str) -> dict:
        """A stage's own flow: its store, its row (the same run id), its metrics."""
        calls.append(run_id)
        with Store.open(db) as own, own.run("score", {"own": True}, run_id=run_id, parent_run_id="p1") as run:
            run.metrics["scored"] = 3
        return {"scored": 3, "path": tmp_path}

    def curate(run_id: str) -> dict:
        with Store.open(db) as own, own.run("curate", run_id=run_id, parent_run_id="p1") as run:
            run.metrics["kept"] = 1
            raise RuntimeError("no candidates")

    # stage run ids are hashes of the pipeline run, the stage and its label: a rerun finds its stages
    assert stage_run_id("p1", "unlearn", "lune") == "bc692ca1a88d4f48"
    with Store.open(db) as store:
        first = StageRunner(store, "p1", said.append)
        assert first("score", score, config={"scorers": ["similarity"]}) == {"scored": 3, "path": str(tmp_path)}
        with pytest.raises(RuntimeError, match="no candidates"):
            first("curate", curate)
        rerun = StageRunner(store, "p1", said.append)
        assert rerun("score", score) == {"scored": 3, "path": str(tmp_path)}  # the stored outputs
        assert calls == [stage_run_id("p1", "score")] and rerun.reused == ["score"]
        assert rerun.timings["score"] == pytest.approx(first.timings["score"], abs=1e-3)
        rows = {r["kind"]: r for r in store.query("SELECT * FROM runs")}
    assert [line.split(" done in")[0] for line in said] == [
        "[score] started",
        "[score]",
        "[curate] started",
        "[score] already completed in this pipeline run; reusing its outputs",
    ]
    scored, failed = rows["score"], rows["curate"]
    assert scored["status"] == "completed" and scored["parent_run_id"] == "p1"
    assert json.loads(scored["config"]) == {"own": True} and json.loads(scored["metrics"]) == {"scored": 3}
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: no candidates"
    assert json.loads(failed["metrics"]) == {"kept": 1}  # what the stage measured before it failed


def small_sample(folder: Path) -> Path:
    """One forget author, two retain authors and ten utility facts, in TOFU's own file layout."""
    folder.mkdir(parents=True)
    keep = {
        "forget01.json": 20,
        "forget01_perturbed.json": 20,
        "retain99.json": None,
        "retain_perturbed.json": 40,
        "world_facts.json": 10,
        "world_facts_perturbed.json": 10,
    }
    retain_questions: set[str] = set()
    for name in (
        "retain_perturbed.json",
        "forget01.json",
        "forget01_perturbed.json",
        "world_facts.json",
        "world_facts_perturbed.json",
    ):
        lines = (SAMPLE_TOFU / name).read_text(encoding="utf-8").splitlines()[: keep[name]]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        if name == "retain_perturbed.json":
            retain_questions = {json.loads(line)["question"] for line in lines}
    retain = [
        line
        for line in (SAMPLE_TOFU / "retain99.json").read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line)["question"] in retain_questions
    ]
    (folder / "retain99.json").write_text("\n".join(retain) + "\n", encoding="utf-8")
    return folder


def write_config(tmp: Path) -> Path:
    data = small_sample(tmp / "tofu")
    config = {
        "workdir": str(tmp / "work"),
        "ingest": {"sources": [{"format": "tofu", "path": str(data), "forget": "forget01"}]},
        "teach": {"epochs": 4, "min_steps": 80, "batch_size": 16, "check_recall": False, "tiny": {"vocab_size": 1024}},
        "unlearn": {"max_steps": 40, "eval_every": 10, "retain_anchor": "nll", "monitor_retain": 16},
        # no real authors in the small sample: model utility of the components present
        "evaluate": {"max_per_set": 16, "plots": False, "utility_missing": "skip"},
        "generate": {"n": 1},
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def lune(args: list[str], cwd: Path, **popen: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lune.cli", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **popen,
    )


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def stage_events(lines: list[str]) -> list[str]:
    """The pipeline's `lune: [stage] started` / `done` announcements, in order, as 'stage started'."""
    return [f"{m[1]} {m[2]}" for line in lines if (m := re.search(r"lune: \[([\w:+]+)\] (started|done)", line))]


def ran_in_order(stages: tuple[str, ...]) -> list[str]:
    return [f"{stage} {event}" for stage in stages for event in ("started", "done")]


def stored(db: Path) -> dict[str, object]:
    from lune.data.store import Store

    with Store(db, read_only=True) as store:
        counts = {t: store.scalar(f"SELECT count(*) FROM {t}") for t in TABLES}
        stage_runs = store.query(
            "SELECT kind, count(*) AS n FROM runs WHERE parent_run_id IS NOT NULL "
            "AND kind <> 'pipeline' GROUP BY kind ORDER BY kind"
        )
    return {"counts": counts, "stage_runs": stage_runs}


def metrics_of(work: Path) -> dict[str, object]:
    results = json.loads((work / "report" / "results.json").read_text(encoding="utf-8"))
    return results["metrics"]


@pytest.mark.slow
def test_lune_run_resumes_after_a_kill_during_unlearning(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    killed_db, clean_db = tmp_path / "killed.duckdb", tmp_path / "clean.duckdb"

    proc = lune(["run", str(config), "--db", str(killed_db)], tmp_path, start_new_session=True)
    seen = []
    deadline = time.monotonic() + 900
    for line in proc.stdout:
        seen.append(line)
        if "[unlearn:lune] started" in line:
            time.sleep(3)  # inside the training loop
            os.killpg(proc.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "".join(seen[-50:])
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-50:])
    # each stage ran once, in the diagram's order, each finished before the next started
    assert stage_events(seen) == [
        *ran_in_order(("ingest", "generate", "score", "curate", "export", "teach")),
        "unlearn:lune started",
    ], "".join(seen[-50:])
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


@pytest.mark.slow
def test_sigterm_stops_the_run_and_its_prefect_server(tmp_path: Path) -> None:
    """`kill` (SIGTERM) on `lune run`: the process ends like on Ctrl-C, the running stage is marked
    failed, and nothing of its process group (Prefect's temporary server) is left behind."""
    from lune.data.store import Store

    config = write_config(tmp_path)
    db = tmp_path / "lune.duckdb"
    proc = lune(["run", str(config), "--db", str(db)], tmp_path, start_new_session=True)
    seen = []
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
    assert stage_events(seen) == [*ran_in_order(("ingest", "generate", "score", "curate", "export")), "teach started"]
    assert "interrupted; what was stored so far is kept" in output
    with Store(db, read_only=True) as store:
        teach = store.query("SELECT status FROM runs WHERE kind = 'teach'")
    assert [row["status"] for row in teach] == ["failed"]
