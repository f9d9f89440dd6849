"""bench/demo.py's bookkeeping: stage times read from `lune run`'s output, min / median / max over
runs, the Markdown summary, and the cut-down config of --short."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_demo", REPO / "bench" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(wall: float, teach: float, table: str = "t", code: int = 0) -> dict:
    return {
        "returncode": code,
        "wall_s": wall,
        "stages_s": {"teach": teach, "unlearn": 2 * teach},
        "load_before": [0.1, 0.2, 0.3],
        "load_after": [2.0, 1.5, 1.0],
        "table": table,
        "log": "run.log",
    }


def test_stage_lines_are_read_from_the_output() -> None:
    bench = load_bench()
    output = "lune: [teach] started\nlune: [teach] done in 90.1 s\nx\nlune: [unlearn:lune] done in 110.0 s\n"
    found = {m["stage"]: float(m["seconds"]) for m in bench.STAGE_LINE.finditer(output)}
    assert found == {"teach": 90.1, "unlearn:lune": 110.0}


def test_summary_takes_min_median_max_over_finished_runs() -> None:
    bench = load_bench()
    machine = {"cpu": bench.cpu_info(), "torch": {"torch": "x", "threads": 2, "native_bf16": True}, "python": "3"}
    runs = [run(200, 60), run(180, 50), run(999, 1, code=1), run(190, 70)]
    summary = bench.summarise(runs, machine, ["lune", "run"])
    assert summary["finished"] == 3 and summary["runs"] == 4
    assert summary["wall_s"] == {"min": 180, "median": 190, "max": 200}  # the failed run is left out
    assert summary["stages_s"]["teach"] == {"min": 50, "median": 60, "max": 70}
    assert summary["same_table"]
    text = bench.markdown(summary)
    assert "| teach | 50.0 s | 60.0 s | 70.0 s |" in text and "failed, exit 1" in text
    assert not bench.summarise([run(1, 1, "a"), run(1, 1, "b")], machine, ["x"])["same_table"]


def test_short_config_cuts_the_default_and_keeps_its_data(tmp_path: Path) -> None:
    bench = load_bench()
    config = yaml.safe_load(bench.short_config(tmp_path).read_text())
    assert config["teach"]["min_steps"] == 4 and config["unlearn"]["max_steps"] == 4
    assert Path(config["ingest"]["sources"][0]["path"]).is_absolute()
    assert (Path(config["ingest"]["sources"][0]["path"]) / "forget01.json").exists()
    assert config["unlearn"]["method"] == "lune"  # the rest of the default is kept
