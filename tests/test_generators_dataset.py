"""The dataset backend and the stage's SQL (data/generation_queries.py, migration 002) on a real store."""

from __future__ import annotations

import json

import pytest
from _generate_data import rwku_like_rows, write_sample_store

from lune.data import generation_queries as q
from lune.data.errors import LuneError
from lune.data.store import Store
from lune.generators.backends import DatasetGenerator
from lune.generators.config import GenerateConfig
from lune.generators.generate import run_backend


@pytest.fixture
def store(db_path):
    write_sample_store(db_path)
    with Store.open(db_path) as s:
        yield s


def test_migration_002_schema(store) -> None:
    assert "generation_batches" in store.tables()
    assert "batch_id" in store.columns("candidates")
    views = {
        r["table_name"]
        for r in store.query("SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW'")
    }
    assert {
        "v_candidates_by_generator",
        "v_candidates_per_fact",
        "v_generation_rejections",
        "v_generation_runs",
    } <= views


def test_select_facts_by_split_and_where(store) -> None:
    forget = q.select_facts(store, split="forget")
    assert len(forget) == 43 and [f["fact_id"] for f in forget] == sorted(f["fact_id"] for f in forget)
    rwku = q.select_facts(store, split="forget", where="corpus = 'rwku' AND key_span <> '1947'")
    assert sorted(f["answer"] for f in rwku) == ["Peter Straub", "Richard Bachman"]
    assert len(q.select_facts(store)) == q.count_facts(store) == 300 + 3  # the sample's rows, the RWKU-like ones
    with pytest.raises(LuneError, match="not a valid condition on table facts"):
        q.select_facts(store, where="no_such_column = 1")


def test_probes_for_facts_links_subject_level_probes(store) -> None:
    facts, _ = rwku_like_rows()
    ids = [f.fact_id for f in facts]
    found = q.probes_for_facts(store, ids)
    anchor = min(ids)
    # the negative text has no fact: it goes to the subject's anchor fact, once
    negatives = [p for fid in found for p in found[fid] if p["kind"] == "negative_text"]
    assert len(negatives) == 1 and negatives[0]["probe_id"] in {p["probe_id"] for p in found[anchor]}
    # fact-linked attacks stay with their fact
    assert {p["attack_type"] for p in found[facts[0].fact_id] if p["kind"] == "adversarial"} == {"synonym manipulation"}
    assert q.probes_for_facts(store, []) == {}


def test_subject_level_attack_goes_to_the_fact_with_its_answer(store) -> None:
    from lune.data.records import Probe

    facts, _ = rwku_like_rows()
    straub = facts[2]
    store.insert(
        "probes",
        [
            Probe(
                corpus="rwku",
                kind="adversarial",
                text="Whose friend co-wrote The Talisman?",
                source_file="x.json",
                subject="Stephen King",
                answer="peter straub ",
                attack_type="reverse query",
            ).to_row()
        ],
    )
    found = q.probes_for_facts(store, [f.fact_id for f in facts])
    assert "Whose friend co-wrote The Talisman?" in {p["text"] for p in found[straub.fact_id]}


def test_dataset_backend_turns_probes_into_candidates(store) -> None:
    facts = q.select_facts(store, split="forget")
    probes = q.probes_for_facts(store, [f["fact_id"] for f in facts])
    for fact in facts:
        fact["probes"] = probes.get(fact["fact_id"], [])
    settings = GenerateConfig(kinds=("negative", "paraphrase", "attack", "refusal"), n=2)
    out = run_backend(facts, DatasetGenerator(), settings, run_id="r1", batch_id="b1")
    rows = out["candidates"]
    expected = sum(1 for f in facts for p in f["probes"])
    assert len(rows) == expected and out["rejections"] == []
    by_probe = {p["probe_id"]: p for f in facts for p in f["probes"]}
    for row in rows:
        probe = by_probe[row["source_probe_id"]]
        assert row["text"] == probe["text"] and row["generator"] == "dataset" and row["seed"] is None
        assert row["strategy"] == f"dataset:{probe['kind']}" and row["prompt_version"] is None
        assert (
            row["kind"]
            == {
                "perturbed_answer": "negative",
                "negative_text": "negative",
                "paraphrased_question": "paraphrase",
                "adversarial": "attack",
            }[probe["kind"]]
        )
    assert {r["attack_type"] for r in rows if r["kind"] == "attack"} == {"synonym_manipulation", "cross_lingual"}
    assert not any(r["kind"] == "refusal" for r in rows)  # datasets ship no refusals
    assert store.insert("candidates", rows) == len(rows)
    assert store.insert("candidates", rows) == 0  # same probes, same ids: nothing twice


def test_completed_and_recorded_batches(store) -> None:
    assert q.completed_batches(store, ["a", "b"]) == set()
    record = {
        "batch_id": "a",
        "run_id": "r",
        "generator": "rules",
        "model": "rules",
        "batch_index": 0,
        "facts": 2,
        "fact_ids": ["f1", "f2"],
        "requests": 4,
        "outputs": 8,
        "candidates": 8,
        "new_candidates": 8,
        "rejected": 0,
        "seconds": 0.1,
    }
    q.record_batch(store, record)
    q.record_batch(store, record)  # a retried write replaces, never duplicates
    assert q.completed_batches(store, ["a", "b"]) == {"a"}
    rows = q.batch_records(store, "r")
    assert len(rows) == 1 and json.loads(rows[0]["fact_ids"]) == ["f1", "f2"]
