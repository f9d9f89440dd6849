"""The labelled check on real data (TOFU forget10_perturbed): with the default CPU scorers and the
default policy, the keep verdict must find the benchmark's perturbed answers (valid negatives) and
refuse its paraphrased answers (restatements of the fact). Figures: BENCHMARKS.md, "## Scoring"."""

from __future__ import annotations

from pathlib import Path

import pytest

from lune.data.store import Store
from lune.generators.scorers.labelled_check import load_labelled, precision_recall, run_check

# Measured 0.958 / 0.934 (BENCHMARKS.md); the bounds leave room for float noise only.
MIN_PRECISION = 0.94
MIN_RECALL = 0.92


def test_load_labelled_pairs_each_fact_with_five_valid_and_one_restatement(benchmark_data: Path) -> None:
    facts, candidates, labels = load_labelled(benchmark_data / "tofu" / "forget10_perturbed.json", limit=3)
    assert len(facts) == 3 and len(candidates) == 18
    assert sorted(labels.values()).count(0) == 3
    assert all(f["key_span"] and f["key_span_source"] == "derived" for f in facts)


def test_precision_recall_arithmetic() -> None:
    labels = {"a": 1, "b": 1, "c": 0, "d": 0}
    got = precision_recall({"a": True, "b": False, "c": True, "d": False}, labels)
    assert (got["precision"], got["recall"], got["tp"], got["fp"], got["fn"], got["tn"]) == (0.5, 0.5, 1, 1, 1, 1)


@pytest.mark.slow
def test_keep_verdict_detects_valid_negatives_on_tofu_forget10(benchmark_data: Path, db_path: Path) -> None:
    with Store(db_path) as store:
        result = run_check(store, benchmark_data / "tofu" / "forget10_perturbed.json")
    assert result["n"] == 2400
    assert result["precision"] >= MIN_PRECISION, result
    assert result["recall"] >= MIN_RECALL, result
