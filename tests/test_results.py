"""The results table and results.json of `lune run`, built from a report.json like the one the
evaluation stage writes (the table must show what the report holds)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lune.results import results_table, write_results


def summary_with_report(tmp_path: Path) -> dict:
    metrics = [
        {"model_label": "base", "method": None, "probe_set": "forget", "metric": "usr", "value": 0.1, "n": 40},
        {"model_label": "lune", "method": "lune", "probe_set": "forget", "metric": "usr", "value": 0.925, "n": 40},
        {"model_label": "lune", "method": "lune", "probe_set": "all", "metric": "gur", "value": 0.95, "n": 100},
        {
            "model_label": "lune",
            "method": "lune",
            "probe_set": "tofu_forget",
            "metric": "truth_ratio",
            "value": 0.61,
            "n": 40,
        },
        {
            "model_label": "lune",
            "method": "lune",
            "probe_set": "attack:role_play",
            "metric": "apr",
            "value": 0.5,
            "n": 4,
        },
        {"model_label": "retain_model", "method": None, "probe_set": "forget", "metric": "usr", "value": 1.0, "n": 40},
    ]
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"headline": {}, "metrics": metrics}), encoding="utf-8")
    return {
        "pipeline_run_id": "p",
        "set_id": "s",
        "methods": ["lune"],
        "model_dir": "m",
        "retain_model_dir": "r",
        "adapters": {"lune": "a"},
        "stage_seconds": {"teach": 1.0},
        "wall_seconds": 12.0,
        "evaluation": {"run_id": "e", "out_dir": str(tmp_path), "report_files": {"report_json": str(report)}},
    }


def test_table_shows_the_reported_numbers_per_model(tmp_path: Path) -> None:
    table = results_table(summary_with_report(tmp_path))
    header = table.splitlines()[0].split()
    assert header == ["metric", "base", "lune"]  # the retain model is a reference, not a column
    recall = next(line for line in table.splitlines() if line.startswith("forget recall"))
    assert recall.split()[-2:] == ["0.900", "0.075"]  # 1 - USR
    assert "0.610" in next(line for line in table.splitlines() if "truth ratio" in line)
    assert "0.500" in next(line for line in table.splitlines() if "role_play" in line)


def test_results_json_sits_beside_the_report(tmp_path: Path) -> None:
    path = write_results(summary_with_report(tmp_path))
    assert path == tmp_path / "results.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["metrics"]["lune"]["forget/usr"] == 0.925
    assert document["models"] == {"base": "m", "retain_model": "r", "lune": "a"}


def test_methods_appear_in_the_order_asked(tmp_path: Path) -> None:
    summary = summary_with_report(tmp_path)
    report = Path(summary["evaluation"]["report_files"]["report_json"])
    document = json.loads(report.read_text(encoding="utf-8"))
    document["metrics"] += [
        {"model_label": label, "method": label, "probe_set": "forget", "metric": "usr", "value": 0.5, "n": 40}
        for label in ("idk", "grad_ascent")
    ]
    report.write_text(json.dumps(document), encoding="utf-8")
    summary["methods"] = ["lune", "grad_ascent", "idk"]
    assert results_table(summary).splitlines()[0].split() == ["metric", "base", "lune", "grad_ascent", "idk"]


def test_a_resumed_run_says_what_it_reused_and_what_that_had_cost(tmp_path: Path) -> None:
    summary = summary_with_report(tmp_path)
    summary["stage_seconds"] = {"ingest": 1.5, "teach": 90.0, "unlearn:lune": 0.0, "evaluate": 30.0}
    summary["reused_stages"] = ["ingest", "teach"]
    lines = results_table(summary).splitlines()
    assert next(line for line in lines if line.startswith("wall time of the run")).split()[-1] == "12"
    assert next(line for line in lines if "2 stages reused, had taken (s)" in line).split()[-1] == "92"
    fresh = summary_with_report(tmp_path)
    assert "reused" not in results_table(fresh)


def test_new_metrics_end_the_mia_and_tofu_block(tmp_path: Path) -> None:
    summary = summary_with_report(tmp_path)
    report = Path(summary["evaluation"]["report_files"]["report_json"])
    document = json.loads(report.read_text(encoding="utf-8"))
    document["metrics"] += [
        {"model_label": "lune", "method": "lune", "probe_set": probe_set, "metric": metric, "value": value, "n": 4}
        for probe_set, metric, value in (
            ("tofu", "model_utility", 0.4),
            ("mia", "privleak", -12.5),
            ("tofu_forget", "exact_memorization", 0.25),
            ("tofu_forget", "extraction_strength", 0.125),
        )
    ]
    report.write_text(json.dumps(document), encoding="utf-8")
    titles = [re.split(r"\s{2,}", line.strip())[0] for line in results_table(summary).splitlines()]
    at = titles.index("TOFU model utility")
    assert titles[at + 1 : at + 4] == [
        "privacy leakage (min-k% AUC vs retain, %)",
        "exact memorization (TOFU forget)",
        "extraction strength (TOFU forget)",
    ]
    assert titles[at + 4] == "APR, role_play"  # the per-family rows still follow
    lines = results_table(summary).splitlines()
    assert next(line for line in lines if line.startswith("privacy leakage")).split()[-1] == "-12.500"
