"""The README's main job: `lune run` with no argument (the embedded default: the shipped TOFU sample,
a tiny model taught on it, rules and dataset negatives, MiniLM scoring, curation, LUNE with a KL
anchor, evaluation), as a user runs it, in a subprocess; then a method comparison on the same
pipeline run, which must reuse the taught models and the LUNE adapter and evaluate anew.

Slow (about 5 minutes on 2 cores): CI runs it, so the main job is checked on every change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_pipeline import finish, lune

pytestmark = pytest.mark.slow

STAGES = ("ingest", "generate", "score", "curate", "export", "teach", "unlearn:lune", "evaluate")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(working folder, output) of `lune run` on the embedded default, run once for the module."""
    cwd = tmp_path_factory.mktemp("default-run")
    output = finish(lune(["run", "--db", str(cwd / "lune.duckdb")], cwd), timeout=1200)
    return cwd, output


def results(cwd: Path, folder: str = "report") -> dict:
    return json.loads((cwd / "runs" / "default" / folder / "results.json").read_text(encoding="utf-8"))


def table_columns(output: str) -> list[str]:
    return output[output.index("\nmetric ") :].splitlines()[1].split()


def test_the_embedded_default_runs_every_stage_and_prints_the_table(default_run: tuple[Path, str]) -> None:
    cwd, output = default_run
    for stage in STAGES:
        assert f"lune: [{stage}] done in" in output, stage
    table = output[output.index("\nmetric ") :]
    assert table_columns(output) == ["metric", "base", "lune"]
    for row in (
        "USR: unlearning success rate",
        "GUR: general utility retention",
        "MIA AUC (loss)",
        "TOFU truth ratio (forget)",
        "TOFU forget quality (KS p-value)",
        "APR on attacks (all families)",
    ):
        assert row in table, row
    report = Path(output.split("report:")[1].split()[0])
    assert report.exists() and report.parent == cwd / "runs" / "default" / "report"

    document = results(cwd)
    assert document["methods"] == ["lune"]
    base, lune_metrics = document["metrics"]["base"], document["metrics"]["lune"]
    # The taught model knows the forget facts; LUNE removes most of them and keeps the retain facts.
    assert base["forget/usr"] <= 0.1
    assert lune_metrics["forget/usr"] >= 0.6
    assert lune_metrics["all/gur"] >= 0.9
    assert lune_metrics["tofu/forget_quality"] > base["tofu/forget_quality"]
    assert set(document["stage_seconds"]) == set(STAGES)


def test_a_comparison_reuses_the_run_and_evaluates_every_method(default_run: tuple[Path, str]) -> None:
    cwd, _ = default_run
    lune_before = results(cwd)["metrics"]["lune"]
    output = finish(lune(["run", "--db", str(cwd / "lune.duckdb"), "--compare", "lune,idk"], cwd), timeout=1200)
    for stage in ("ingest", "score", "teach", "unlearn:lune"):
        assert f"lune: [{stage}] already completed" in output, stage
    assert "lune: [unlearn:idk] done in" in output
    assert "lune: [evaluate:lune+idk] done in" in output  # not the single-method evaluation of the first run

    assert "results: " + str(cwd / "runs" / "default" / "report-lune+idk" / "results.json") in output
    document = results(cwd, "report-lune+idk")
    assert document["methods"] == ["lune", "idk"]
    assert table_columns(output) == ["metric", "base", "lune", "idk"]
    # The same adapter, evaluated again on the same probes: the same numbers.
    assert document["metrics"]["lune"]["forget/usr"] == lune_before["forget/usr"]
    # idk ran with its own settings from the config's per_method section.
    manifest = json.loads((cwd / "runs" / "default" / "unlearned" / "idk" / "manifest.json").read_text("utf-8"))
    assert manifest["method"] == "idk" and manifest["config"]["learning_rate"] == 3.0e-4

    # The first run's report is still its own, and replaying that run shows it, not the comparison.
    assert results(cwd)["methods"] == ["lune"] and set(results(cwd)["metrics"]) - {"retain_model"} == {"base", "lune"}
    replay = finish(lune(["run", "--db", str(cwd / "lune.duckdb")], cwd), timeout=600)
    assert "lune: [evaluate] already completed" in replay
    assert table_columns(replay) == ["metric", "base", "lune"]
    assert "8 stages reused, had taken (s)" in replay
