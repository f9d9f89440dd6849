"""`lune score` killed (SIGKILL) in the middle of the similarity scorer, as a user's machine may do
it: what it finished is kept (scores and embeddings), a rerun scores only the rest, and the end
result is the scores of an uninterrupted run, value for value."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from lune.data.store import Store
from lune.generators.config import ScoreConfig
from lune.generators.scorers import score_stage
from lune.generators.scorers.labelled_check import load_labelled

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "tofu" / "forget01_perturbed.json"
SETTINGS = {"chunk_size": 8, "batch_size": 4}  # small batches: many written steps on a small store


def scores(db: Path) -> list[tuple]:
    with Store(db, read_only=True) as store:
        rows = store.query("SELECT candidate_id, scorer, scorer_version, value, detail FROM scores ORDER BY ALL")
    return [tuple(r.values()) for r in rows]


def lune_score(db: Path) -> subprocess.Popen:
    options = [f"--{name.replace('_', '-')}={value}" for name, value in SETTINGS.items()]
    return subprocess.Popen(
        [sys.executable, "-m", "lune.cli", "score", "--db", str(db), *options],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_a_killed_score_run_keeps_its_batches_and_a_rerun_ends_as_an_uninterrupted_run(tmp_path: Path) -> None:
    facts, candidates, _ = load_labelled(SAMPLE, limit=10)  # 10 facts, 60 negatives
    killed, clean = tmp_path / "killed.duckdb", tmp_path / "clean.duckdb"
    with Store(killed) as store:
        store.insert("facts", facts)
        store.insert("candidates", candidates)
    shutil.copy(killed, clean)

    proc = lune_score(killed)
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if line.split()[:1] == ["similarity"] and "candidates," in line:  # a batch is stored, more to come
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    with Store(killed, read_only=True) as store:
        kept = store.scalar("SELECT count(*) FROM scores WHERE scorer = 'similarity'")
        embedded = store.scalar("SELECT count(*) FROM embeddings")
    assert 0 < kept < len(candidates) and embedded >= kept

    # The rerun and the uninterrupted run in this process: the same call as `lune score`.
    with Store(killed) as store:
        rerun = score_stage(store, ScoreConfig(**SETTINGS))
    assert rerun["written"]["similarity"] == len(candidates) - kept  # only what the killed run had not stored
    with Store(clean) as store:
        score_stage(store, ScoreConfig(**SETTINGS))
    assert scores(killed) == scores(clean)
