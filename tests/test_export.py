"""Export of a curated set: the contract's columns, the pairing of prompts and targets, and the round
trip through datasets.save_to_disk / load_from_disk and Parquet."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lune.data.errors import LuneError
from lune.data.export import SPLIT_COLUMNS, curated_rows, export_set, resolve_set
from lune.data.store import Store
from lune.generators.config import CurateConfig, ScoreConfig
from lune.generators.curation import curate
from lune.generators.scorers import run_scorers

sys.path.insert(0, str(Path(__file__).parent))
from test_curation import BORN, GENRE, fill


@pytest.fixture
def curated(db_path: Path):
    with Store(db_path) as store:
        fill(store)
        run_scorers(store, ScoreConfig())
        result = curate(store, CurateConfig(name="export-me", eval_fraction=0.5))
        yield store, result


def test_curated_rows_follow_the_contract(curated) -> None:
    store, result = curated
    rows = curated_rows(store, "export-me")
    for split, columns in SPLIT_COLUMNS.items():
        assert rows[split], split
        assert all(tuple(r) == columns for r in rows[split])
    train = rows["train"]
    questions = [r for r in train if r["prompt_kind"] == "question"]
    assert {r["prompt"] for r in questions} == {BORN.question}  # GENRE has no kept target
    assert {r["target_kind"] for r in questions} == {"negative", "refusal"}
    prompts = [r for r in train if r["prompt_kind"] in ("paraphrase", "attack")]
    negatives = [r["target"] for r in questions if r["target_kind"] == "negative"]
    # Round-robin: the i-th train paraphrase of a fact gets its (i mod n)-th best negative.
    assert [r["target"] for r in prompts] == [negatives[i % len(negatives)] for i in range(len(prompts))]
    assert {r["source"] for r in rows["eval"]} == {"generated", "dataset"}
    assert {r["kind"] for r in rows["eval"]} == {"paraphrase", "attack"}
    assert {r["fact_id"] for r in rows["forget"]} == {BORN.fact_id, GENRE.fact_id}
    assert resolve_set(store, "export-me") == result.set_id == resolve_set(store, result.set_id)
    assert curated_rows(store, "export-me", version=1) == rows


def test_export_round_trip(curated, tmp_path: Path) -> None:
    import datasets

    store, result = curated
    out = tmp_path / "export"
    info = export_set(store, "export-me", out)
    rows = curated_rows(store, result.set_id)
    loaded = datasets.load_from_disk(str(out / "hf"))
    assert set(loaded) == set(SPLIT_COLUMNS)
    for split, columns in SPLIT_COLUMNS.items():
        assert tuple(loaded[split].column_names) == columns
        assert loaded[split].to_list() == rows[split]
        assert pq.read_table(out / "parquet" / f"{split}.parquet").to_pylist() == rows[split]
        assert info["rows"][split] == len(rows[split])
    card = (out / "README.md").read_text()
    assert "# Curated set `export-me` version 1" in card and "## Score histograms" in card
    assert "similarity:" in card and '"min_per_fact": 1' in card and "below the minimum" in card


def test_unknown_set_names_the_known_ones(curated) -> None:
    store, _ = curated
    with pytest.raises(LuneError, match=r"no curated set 'nope'.*export-me \(v1\)"):
        resolve_set(store, "nope")
    with pytest.raises(LuneError, match="version 7"):
        curated_rows(store, "export-me", version=7)


def test_cli_score_curate_export(db_path: Path, tmp_path: Path, capsys) -> None:
    from lune.cli import main

    with Store(db_path) as store:
        fill(store)
    assert main(["score", "--db", str(db_path)]) == 0
    assert "contradiction: off:" in capsys.readouterr().out
    assert main(["curate", "--db", str(db_path), "--name", "cli"]) == 0
    out = capsys.readouterr().out
    assert "curated set cli version 1" in out and "1 of 2 fact(s) have fewer than 1" in out
    assert main(["export", "--db", str(db_path), "--name", "cli", "--out", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "hf" / "dataset_dict.json").exists()
    assert main(["score", "--db", str(db_path), "--only", "nope"]) == 2
