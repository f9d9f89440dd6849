"""The Prefect flow `build_negatives` and `lune generate` on a real store: batches, one writer,
resumption after a failure, task retries, the runs row, and the Dask runner. Failures are injected
with `generators.faults.injected_faults` (not a parameter of the flow)."""

from __future__ import annotations

import json

import pytest
from _generate_data import write_sample_store

from lune.data.errors import LuneError
from lune.data.store import Store
from lune.flows.generate import build_negatives
from lune.generators.faults import injected_faults

CONFIG = {
    "backend": "rules",
    "batch_size": 8,
    "n": 3,
    "task_retries": 0,
    "retry_delay_s": 0,
    "kinds": ["negative", "paraphrase", "attack", "refusal"],
}


def ids_and_counts(db) -> tuple[set[str], int, list[dict]]:
    with Store.open(db) as store:
        ids = {r["candidate_id"] for r in store.query("SELECT candidate_id FROM candidates")}
        total = store.scalar("SELECT count(*) FROM candidates")
        batches = store.query(
            "SELECT batch_id, batch_index, run_id, new_candidates FROM generation_batches ORDER BY batch_index"
        )
    return ids, total, batches


def query(db, sql: str, params: list | None = None) -> list[dict]:
    with Store.open(db) as store:
        return store.query(sql, params)


@pytest.fixture
def sample_db(db_path):
    return write_sample_store(db_path)


def test_rules_flow_then_rerun_writes_nothing_twice(sample_db, prefect_harness) -> None:
    first = build_negatives(str(sample_db), CONFIG)
    assert first["facts"] == 43 and first["batches"] == 6 and first["generated_batches"] == 6
    assert first["new_candidates"] > 43 * 10
    assert set(first["by_kind"]) == {"negative", "paraphrase", "attack", "refusal"}
    with Store.open(sample_db) as store:
        run = store.query("SELECT * FROM runs WHERE run_id = ?", [first["run_id"]])[0]
        assert run["kind"] == "generate" and run["status"] == "completed"
        assert json.loads(run["config"])["backend"] == "rules"
        assert json.loads(run["metrics"])["new_candidates"] == first["new_candidates"]
        assert (
            store.scalar("SELECT count(*) FROM candidates WHERE run_id = ?", [first["run_id"]])
            == first["new_candidates"]
        )
        # the dataset's own probes came along (include_dataset), with their provenance
        assert (
            store.scalar("SELECT count(*) FROM candidates WHERE generator = 'dataset' AND source_probe_id IS NOT NULL")
            > 40
        )
        assert store.scalar("SELECT count(*) FROM v_generation_runs") == 1
        rejected = store.scalar("SELECT count(*) FROM rejections WHERE stage = 'generate'")
    again = build_negatives(str(sample_db), CONFIG)
    assert again["skipped_batches"] == 6 and again["generated_batches"] == 0 and again["new_candidates"] == 0
    ids, total, _ = ids_and_counts(sample_db)
    assert total == len(ids) == first["new_candidates"]
    with Store.open(sample_db) as store:
        assert store.scalar("SELECT count(*) FROM rejections WHERE stage = 'generate'") == rejected


def test_failure_in_batch_k_then_rerun_generates_only_the_missing_batch(tmp_path, prefect_harness) -> None:
    reference = write_sample_store(tmp_path / "reference.duckdb")
    build_negatives(str(reference), CONFIG)
    expected_ids, expected_total, expected_batches = ids_and_counts(reference)

    db = write_sample_store(tmp_path / "resumed.duckdb")
    with injected_faults(fail=[2]), pytest.raises(LuneError, match=r"1 of 6 generation batches failed \(batches 2;"):
        build_negatives(str(db), CONFIG)
    ids, total, batches = ids_and_counts(db)
    assert [b["batch_index"] for b in batches] == [0, 1, 3, 4, 5]
    assert 0 < total < expected_total and ids < expected_ids
    failed_run = query(db, "SELECT status, error FROM runs WHERE kind = 'generate'")[0]
    assert failed_run["status"] == "failed" and "run the same command again" in failed_run["error"]

    rerun = build_negatives(str(db), CONFIG)
    assert rerun["skipped_batches"] == 5 and rerun["generated_batches"] == 1 and rerun["failed_batches"] == []
    ids, total, batches = ids_and_counts(db)
    assert ids == expected_ids and total == len(ids) == expected_total  # nothing lost, nothing twice
    assert [b["batch_id"] for b in batches] == [b["batch_id"] for b in expected_batches]
    assert [b["batch_index"] for b in batches if b["run_id"] == rerun["run_id"]] == [2]
    assert rerun["new_candidates"] == expected_batches[2]["new_candidates"]


def test_a_flaky_batch_is_retried_by_its_task(sample_db, tmp_path, prefect_harness) -> None:
    with injected_faults(flaky=[0, 3]):
        summary = build_negatives(str(sample_db), {**CONFIG, "task_retries": 1})
    assert summary["generated_batches"] == 6 and summary["failed_batches"] == []
    with Store.open(sample_db) as store:
        assert store.scalar("SELECT count(*) FROM generation_batches") == 6
    # without the retry, the flaky batches fail
    flaky = write_sample_store(tmp_path / "flaky.duckdb")
    with injected_faults(flaky=[0, 3]), pytest.raises(LuneError, match=r"2 of 6 .* failed \(batches 0, 3;"):
        build_negatives(str(flaky), CONFIG)


def test_lune_generate_command(sample_db, prefect_harness, capsys) -> None:
    from lune.cli import main

    code = main(
        [
            "generate",
            "--db",
            str(sample_db),
            "--kinds",
            "negative,refusal",
            "--n",
            "2",
            "--no-dataset",
            "--split",
            "forget",
            "--where",
            "corpus = 'tofu'",
            "--batch-size",
            "64",
            "--run-id",
            "gen-cli",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "40 facts in 1 batches" in out and "run gen-cli" in out
    with Store.open(sample_db) as store:
        kinds = {r["kind"] for r in store.query("SELECT DISTINCT kind FROM candidates")}
        assert kinds == {"negative", "refusal"}
        assert store.scalar("SELECT count(*) FROM candidates WHERE generator = 'dataset'") == 0
        config = json.loads(store.scalar("SELECT config FROM runs WHERE run_id = 'gen-cli'"))
    assert config["n"] == 2 and config["where"] == "corpus = 'tofu'" and config["include_dataset"] is False
    assert main(["generate", "--db", str(sample_db), "--split", "holdout"]) == 0
    assert "no facts of split holdout" in capsys.readouterr().out
    assert main(["generate", "--db", str(sample_db), "--where", "nope = 1"]) == 2
    assert "not a valid condition" in capsys.readouterr().err
    assert main(["generate", "--db", str(sample_db), "--backend", "vllm"]) == 2
    assert "needs `model`" in capsys.readouterr().err


@pytest.mark.slow
def test_dask_task_runner(sample_db, prefect_harness) -> None:
    summary = build_negatives(str(sample_db), {**CONFIG, "task_runner": "dask", "workers": 2})
    assert summary["generated_batches"] == 6
    ids, total, batches = ids_and_counts(sample_db)
    assert total == len(ids) == summary["new_candidates"] and len(batches) == 6


@pytest.mark.slow
def test_transformers_backend_in_the_flow(sample_db, tiny_model_dir, prefect_harness) -> None:
    """A model backend through the flow: tasks get the model path and load it once; an untrained
    model's malformed JSON becomes rejections rows, never a crash."""
    from lune.generators.generate import clear_backend_cache

    config = {
        "backend": "transformers",
        "model": str(tiny_model_dir),
        "batch_size": 10,
        "n": 2,
        "max_tokens": 12,
        "kinds": ["negative", "paraphrase"],
        "include_dataset": False,
        "where": "corpus = 'rwku'",
        "task_retries": 0,
    }
    clear_backend_cache()
    summary = build_negatives(str(sample_db), config)
    assert summary["facts"] == 3 and summary["outputs"] == 3 * 2 * 2
    with Store.open(sample_db) as store:
        rows = store.query(
            "SELECT reason, payload FROM rejections WHERE stage = 'generate' AND source = ?",
            [f"transformers:{tiny_model_dir}"],
        )
        written = store.scalar("SELECT count(*) FROM candidates WHERE generator = 'transformers'")
    assert written + len(rows) >= summary["outputs"]
    assert all(r["reason"] for r in rows)
    plain = build_negatives(str(sample_db), {**config, "structured": False, "temperature": 0})
    assert plain["outputs"] == 12
