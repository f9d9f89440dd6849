"""`lune teach`: the tiny model learns the facts (high key-span recall), the retain model does not
know the forget facts, the result is cached by content, and the run is recorded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lune.data.errors import LuneError
from lune.data.store import Store
from lune.unlearn.config import TeachConfig
from lune.unlearn.sample_set import sample_facts
from lune.unlearn.teach import teach, teach_key

# 2 forget authors and 2 retain authors (80 facts): the subset the unlearning tests use too.
SUBSET = {"forget": 40, "retain": 40, "utility": 0}
# Batch 8, 200 steps per model: recall 1.0 on these 80 facts (measured; batch 16 needs 30 epochs).
TEST_TEACH = TeachConfig(epochs=1, min_steps=200, batch_size=8)


def shared_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One teach cache for the session: test_unlearn.py teaches the same facts and gets them cached."""
    return tmp_path_factory.getbasetemp() / "lune-teach-cache"


@pytest.mark.slow
def test_teach_learns_the_facts_records_the_run_and_caches(tmp_path_factory, db_path: Path) -> None:
    facts = sample_facts(SUBSET)
    workdir = shared_workdir(tmp_path_factory)
    with Store.open(db_path) as store:
        result = teach(facts, workdir, TEST_TEACH, store=store, progress=False)
        taught, retain = result.metrics["taught"], result.metrics["retain"]
        assert taught["recall"] >= 0.9, taught
        assert retain["recall"] >= 0.9, retain  # the retain facts, by the retain model
        assert retain["untaught_forget_recall"] <= 0.2, retain  # never saw them: it can only guess
        for folder in (result.model_dir, result.retain_model_dir):
            assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
            assert json.loads((folder / "manifest.json").read_text())["facts"] in (80, 40)
        row = store.query("SELECT kind, status, metrics, artefacts FROM runs WHERE run_id = ?", [result.run_id])[0]
        assert (row["kind"], row["status"]) == ("teach", "completed")
        recorded = json.loads(row["metrics"])
        assert recorded["taught"]["trainable_params"] == recorded["taught"]["total_params"] > 0
        assert recorded["taught"]["tokens_per_s"] > 0 and recorded["taught"]["peak_rss_mib"] > 0
        assert json.loads(row["artefacts"])["retain_model"] == str(result.retain_model_dir)

        started = time.perf_counter()
        again = teach(list(reversed(facts)), workdir, TEST_TEACH, store=store, progress=False)
        assert time.perf_counter() - started < 2.0
        assert again.cached and again.model_dir == result.model_dir
        assert again.retain_model_dir == result.retain_model_dir


def test_teach_key_follows_the_facts_and_the_settings() -> None:
    facts = sample_facts({"forget": 3, "retain": 3, "utility": 0})
    key = teach_key(facts, TeachConfig())
    assert key == teach_key(list(reversed(facts)), TeachConfig())  # order does not matter
    assert key == teach_key(facts, TeachConfig(check_recall=False))  # neither does a check
    assert key != teach_key(facts, TeachConfig(epochs=3))
    changed = [dict(facts[0], answer=facts[0]["answer"] + " Indeed.")] + facts[1:]
    assert key != teach_key(changed, TeachConfig())


def test_teach_refuses_an_empty_corpus_and_bad_rows(tmp_path: Path) -> None:
    with pytest.raises(LuneError, match="no facts to teach"):
        teach([], tmp_path)
    holdout_only = [dict(f, split="holdout") for f in sample_facts({"forget": 2, "retain": 0, "utility": 0})]
    with pytest.raises(LuneError, match="no facts to teach"):
        teach(holdout_only, tmp_path)
    with pytest.raises(LuneError, match="missing key_span"):
        teach([{"fact_id": "x", "question": "q?", "answer": "a", "split": "forget"}], tmp_path)


def test_teach_splits_choose_what_is_taught(tmp_path: Path) -> None:
    facts = sample_facts({"forget": 4, "retain": 4, "utility": 4})
    assert {f["split"] for f in facts} == {"forget", "retain", "utility"}
    no_utility = TeachConfig(splits=["forget", "retain"], epochs=1, min_steps=1, check_recall=False, retain_model=False)
    with pytest.raises(LuneError, match=r"no facts to teach \(teach.splits: forget, retain\)"):
        teach([f for f in facts if f["split"] == "utility"], tmp_path, no_utility, progress=False)
    result = teach(facts, tmp_path, no_utility, progress=False)
    assert json.loads((result.model_dir / "manifest.json").read_text())["facts"] == 8  # utility left out
    everything = no_utility.model_copy(update={"splits": ["forget", "retain", "utility"]})
    assert teach(facts, tmp_path, everything, progress=False).model_dir != result.model_dir
    with pytest.raises(ValueError, match="holdout"):
        TeachConfig(splits=["forget", "holdout"])
