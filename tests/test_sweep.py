"""`lune sweep`: points expanded and validated before anything runs, shared stages run once per
content key (a sweep over the LoRA rank neither regenerates nor rescores), results in
`sweep_points`, the report, a rerun that runs nothing, and points on a 2-worker Dask cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from lune.data.errors import LuneError

SAMPLE_TOFU = Path(__file__).resolve().parents[1] / "data" / "sample" / "tofu"


def tiny_sample(folder: Path) -> Path:
    """Ten forget facts, twenty retain facts and ten utility facts in TOFU's file layout."""
    folder.mkdir(parents=True)
    keep = {"forget01.json": 10, "forget01_perturbed.json": 10, "retain_perturbed.json": 20}
    keep |= {"world_facts.json": 5, "world_facts_perturbed.json": 5}
    keep |= {"real_authors.json": 5, "real_authors_perturbed.json": 5}
    questions: set[str] = set()
    for name, n in keep.items():
        lines = (SAMPLE_TOFU / name).read_text(encoding="utf-8").splitlines()[:n]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        if name == "retain_perturbed.json":
            questions = {json.loads(line)["question"] for line in lines}
    retain = [
        line
        for line in (SAMPLE_TOFU / "retain99.json").read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line)["question"] in questions
    ]
    (folder / "retain99.json").write_text("\n".join(retain) + "\n", encoding="utf-8")
    return folder


def sweep_file(tmp: Path, sweep: dict, **sections: dict) -> Path:
    config = {
        "workdir": str(tmp / "work"),
        "ingest": {"sources": [{"format": "tofu", "path": str(tiny_sample(tmp / "tofu")), "forget": "forget01"}]},
        "generate": {"n": 1, "include_dataset": False},
        "teach": {
            "epochs": 2,
            "min_steps": 10,
            "check_recall": False,
            "retain_model": False,
            "tiny": {"vocab_size": 512},
        },
        "unlearn": {"max_steps": 4, "eval_every": 2, "monitor_forget": 8, "monitor_retain": 8},
        "evaluate": {"max_per_set": 8, "plots": False, "mia": False},
        "sweep": sweep,
        **sections,
    }
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_points_are_the_grid_times_the_seeds_each_validated(tmp_path: Path) -> None:
    from lune.flows.sweep_config import load_sweep

    path = sweep_file(
        tmp_path,
        {
            "axes": [
                {"key": "unlearn.lora.rank", "values": [2, 8]},
                {"name": "neg", "values": [{"generate.backend": "rules"}, {"generate.backend": "dataset"}]},
            ],
            "seeds": [0, 1],
        },
    )
    config, points = load_sweep(path)
    assert len(points) == 8 and len({p.point_id for p in points}) == 8
    ranks = sorted({(p.config.unlearn.lora.rank, p.config.generate.backend, p.config.unlearn.seed) for p in points})
    assert ranks == [(r, b, s) for r in (2, 8) for b in ("dataset", "rules") for s in (0, 1)]
    assert config.unlearn.lora.rank == 16  # the base is untouched


def test_axis_labels_name_the_values_and_must_match_them(tmp_path: Path) -> None:
    from lune.flows.sweep_config import load_sweep

    values = [{"generate.backend": "rules"}, {"generate.backend": "dataset"}]
    axis = {"name": "neg", "values": values, "labels": ["rules", "TOFU's own"]}
    _, points = load_sweep(sweep_file(tmp_path / "a", {"axes": [axis]}))
    assert [(p.values["neg"], p.config.generate.backend) for p in points] == [
        ("rules", "rules"),
        ("TOFU's own", "dataset"),
    ]
    for i, labels in enumerate((["rules"], ["x", "x"])):
        with pytest.raises(LuneError, match=r"axis neg: labels must be distinct, one per value \(2 values"):
            load_sweep(sweep_file(tmp_path / f"bad{i}", {"axes": [dict(axis, labels=labels)]}))


def test_random_mode_draws_a_seeded_sample_without_repeats(tmp_path: Path) -> None:
    from lune.flows.sweep_config import load_sweep

    sweep = {"axes": [{"key": "unlearn.lora.rank", "values": [1, 2, 4, 8, 16]}], "mode": "random", "samples": 3}
    first = [p.config.unlearn.lora.rank for p in load_sweep(sweep_file(tmp_path / "a", sweep))[1]]
    again = [p.config.unlearn.lora.rank for p in load_sweep(sweep_file(tmp_path / "b", sweep))[1]]
    assert first == again and len(set(first)) == 3


@pytest.mark.parametrize(
    ("axis", "message"),
    [
        ({"key": "unlearn.lora.rnk", "values": [4]}, "unknown config key 'unlearn.lora.rnk': no 'rnk' in unlearn.lora"),
        (
            {"key": "unlearn.lora.rank", "values": [4, 0]},
            "unlearn.lora.rank: Input should be greater than or equal to 1",
        ),
        ({"key": "unlearn.method", "values": ["lune", "nope"]}, "unlearn.method: Input should be"),
        ({"key": "curatee.seed", "values": [1]}, "no 'curatee' in the top level"),
    ],
)
def test_a_bad_axis_is_rejected_before_anything_runs_with_its_key_path(
    tmp_path: Path, axis: dict, message: str
) -> None:
    from lune.flows.sweep import sweep_flow

    path = sweep_file(tmp_path, {"axes": [axis]})
    db = tmp_path / "results.duckdb"
    with pytest.raises(LuneError, match="sweep point") as err:
        sweep_flow.fn(str(db), str(path))
    assert message in str(err.value)
    assert not db.exists() and not (tmp_path / "work").exists()  # nothing ran


def test_the_command_lists_the_points_with_check_and_names_a_bad_key(tmp_path: Path, capsys) -> None:
    from lune.cli import main

    good = sweep_file(tmp_path / "a", {"axes": [{"key": "unlearn.lora.rank", "values": [2, 4]}], "seeds": [0, 1]})
    assert main(["sweep", str(good), "--check", "--db", str(tmp_path / "r.duckdb")]) == 0
    out = capsys.readouterr().out
    assert "4 points; nothing run" in out and out.count("'unlearn.lora.rank': '2'") == 2
    bad = sweep_file(tmp_path / "b", {"axes": [{"key": "unlearn.lora.ranks", "values": [2]}]})
    assert main(["sweep", str(bad), "--db", str(tmp_path / "r.duckdb")]) == 2
    err = capsys.readouterr().err
    assert "lune sweep: error:" in err and "unknown config key 'unlearn.lora.ranks'" in err
    assert not (tmp_path / "r.duckdb").exists()


def test_pure_helpers() -> None:
    from lune.evaluation.sweep_report import PointResult, axis_effect, effect_cell, mean_ci, pareto_front

    assert pareto_front([(0.9, 0.5), (0.8, 0.9), (0.7, 0.4), (0.9, 0.5)]) == [True, True, False, True]
    mean, half = mean_ci([0.5, 0.7])
    assert mean == pytest.approx(0.6) and half == pytest.approx(12.7062 * 0.141421 / 1.414214, rel=1e-4)
    assert mean_ci([0.3]) == (0.3, 0.0)
    points = [
        PointResult("a", 0, {"rank": "2", "q": "x"}, "lune", {"usr": 0.2}),
        PointResult("b", 0, {"rank": "2", "q": "y"}, "lune", {"usr": 0.4}),
        PointResult("c", 1, {"rank": "2", "q": "x"}, "lune", {"usr": 0.6}),
        PointResult("d", 1, {"rank": "2", "q": "y"}, "lune", {"usr": 0.6}),
    ]
    # seed 0: mean 0.3, seed 1: mean 0.6 -> 0.45, CI over the two seeds
    [(value, mean, half, seeds)] = axis_effect(points, "rank", "usr")
    assert (value, seeds) == ("2", 2) and mean == pytest.approx(0.45)
    assert half == pytest.approx(12.7062 * 0.212132 / 1.414214, rel=1e-4)
    assert effect_cell("2", mean, half, seeds) == f"2: 0.450 ± {half:.3f} (2 seeds)"
    # one seed: no interval to give, so none is printed (it read "± 0.000" before)
    assert effect_cell("16", 0.85, 0.0, 1) == "16: 0.850 (1 seed, no interval)"


def test_point_progress_estimates_the_rest_from_the_points_done() -> None:
    from lune.flows.sweep import point_progress

    assert point_progress(1, 3, 540.0) == "1/3 points, 9.0 min so far, about 18.0 min left"
    assert point_progress(2, 8, 60.0) == "2/8 points, 1.0 min so far, about 3.0 min left"
    assert point_progress(3, 3, 1620.0) == "3/3 points, 27.0 min so far"


def stage_runs(db: str) -> dict[str, int]:
    from lune.data.store import Store

    with Store(db, read_only=True) as store:
        rows = store.query("SELECT kind, count(*) AS n FROM runs GROUP BY kind")
    return {r["kind"]: r["n"] for r in rows}


@pytest.mark.slow
def test_a_rank_sweep_generates_scores_and_teaches_once_and_a_rerun_runs_nothing(
    tmp_path: Path, prefect_harness
) -> None:
    """Over capped facts (`select.max_facts`): the sweep selects as `lune run` does, so teaching and
    generation see the capped splits only."""
    from lune.data import sweep_queries
    from lune.data.store import Store
    from lune.flows.sweep import sweep_flow

    path = sweep_file(
        tmp_path, {"axes": [{"key": "unlearn.lora.rank", "values": [2, 4]}]}, select={"max_facts": {"retain": 12}}
    )
    db = str(tmp_path / "results.duckdb")
    summary = sweep_flow(db, str(path))
    [data_store] = summary["data_stores"]
    # one data store; each shared stage ran once for the two points, the second point reused them
    assert stage_runs(data_store) == {"ingest": 1, "select": 1, "generate": 1, "score": 1, "curate": 1, "teach": 1}
    assert summary["reused_stages"] == ["ingest", "select", "generate", "score", "curate", "teach"]
    with Store(data_store, read_only=True) as store:
        splits = {r["split"]: r["n"] for r in store.query("SELECT split, count(*) AS n FROM facts GROUP BY split")}
        [taught] = store.query("SELECT metrics FROM runs WHERE kind = 'teach'")
    assert splits["retain"] == 12 and splits["set_aside"] == 8  # the tiny sample's 20 retain facts, capped
    assert json.loads(taught["metrics"])["facts"] == 10 + 12 + 10  # forget, capped retain, utility
    points = summary["points"]
    assert len(points) == 2 and all(p["headline"]["lune"]["usr"] is not None for p in points)
    params = sorted(p["trainable_params"] for p in points)
    assert params[1] == 2 * params[0]  # LoRA parameters grow linearly with the rank
    with Store(db, read_only=True) as store:
        rows = sweep_queries.sweep_rows(store, summary["sweep_id"])
    assert {r["axis_values"]["unlearn.lora.rank"] for r in rows} == {"2", "4"}
    assert {"usr", "gur", "negatives_per_fact"} <= {r["metric"] for r in rows if r["model_label"] == "lune"}
    assert len(rows) == len({(r["point_id"], r["model_label"], r["metric"]) for r in rows})  # one row each
    report = Path(summary["report_files"]["report_md"]).read_text(encoding="utf-8")
    assert "| unlearn.lora.rank | seed | model | usr |" in report
    assert Path(summary["report_files"]["pareto_png"]).stat().st_size > 0

    again = sweep_flow(db, str(path))  # every point measured: nothing runs, same numbers
    assert again["data_stores"] == [] and again["reused_stages"] == []
    assert [p["headline"]["lune"]["usr"] for p in again["points"]] == [p["headline"]["lune"]["usr"] for p in points]


def unlearn_flow_runs() -> int:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["unlearn"]))))


@pytest.mark.slow
def test_points_run_on_a_two_worker_dask_cluster_each_sized_to_its_share(tmp_path: Path, prefect_harness) -> None:
    """lune's own local cluster of 2 worker processes; each point's flow runs report to this
    process's Prefect server (before, each worker started a temporary server of its own)."""
    from lune.core.threads import usable_cores
    from lune.flows.sweep import sweep_flow

    sweep = {
        "axes": [{"key": "unlearn.lora.target_modules", "values": [["q_proj", "v_proj"], ["down_proj"]]}],
        "task_runner": "dask",
        "workers": 2,
    }
    before = unlearn_flow_runs()
    summary = sweep_flow(str(tmp_path / "results.duckdb"), str(sweep_file(tmp_path, sweep)))
    assert unlearn_flow_runs() - before == 2  # the workers' unlearning runs, in the harness's server
    points = summary["points"]
    assert len(points) == 2 and all(p["headline"]["lune"]["usr"] is not None for p in points)
    assert os.getpid() not in {p["pid"] for p in points}  # measured in the workers' processes
    # two workers on this machine's cores: each took at most its half
    assert all(1 <= p["threads"] <= max(1, len(usable_cores()) // 2) for p in points)
    assert points[0]["trainable_params"] != points[1]["trainable_params"]  # other modules adapted


def test_local_dask_workers_report_to_this_process_prefect_server(prefect_harness) -> None:
    """The workers' environment names the API of this process: the configured URL, or, on a
    temporary server (no URL set), that server's; an address of a running scheduler is used as is."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    from lune.flows.task_runners import make_task_runner, worker_environment

    assert worker_environment() == {"PREFECT_API_URL": get_current_settings().api.url}
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert get_current_settings().api.url is None
        assert worker_environment() == {"PREFECT_API_URL": SubprocessASGIServer().api_url}
    runner = make_task_runner("dask", 2)
    assert runner.cluster_kwargs["env"] == worker_environment() and runner.cluster_kwargs["n_workers"] == 2
    assert make_task_runner("dask", 2, "tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"


def test_a_local_clusters_workers_lack_the_nannys_malloc_and_thread_settings(monkeypatch) -> None:
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 and OMP_NUM_THREADS=1 in its workers (and in
    the process starting them); the trim threshold made training 1.6 times slower (BENCHMARKS.md)."""
    from distributed import Client

    from lune.flows.task_runners import NANNY_ENV_UNSET, local_cluster, nanny_env_warning

    for name in NANNY_ENV_UNSET:
        monkeypatch.delenv(name, raising=False)
    with (
        local_cluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        [seen] = client.run(lambda: {name: os.environ.get(name) for name in NANNY_ENV_UNSET}).values()
    assert seen == dict.fromkeys(NANNY_ENV_UNSET)
    assert not any(name in os.environ for name in NANNY_ENV_UNSET)  # nor leaked into this process
    assert nanny_env_warning() is None
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # a worker of a cluster started elsewhere
    assert "MALLOC_TRIM_THRESHOLD_=65536" in (nanny_env_warning() or "")


@pytest.mark.slow
def test_the_ci_grid_runs_through_the_command_line(tmp_path: Path) -> None:
    """`lune sweep configs/sweep-quality.yaml` on the embedded default, as CI runs it: two negative
    sources (two data stores), two curation thresholds (curated twice per store, scored once)."""
    import subprocess
    import sys

    from lune.data.store import Store

    config = Path(__file__).resolve().parents[1] / "configs" / "sweep-quality.yaml"
    db = tmp_path / "sweep.duckdb"
    out = subprocess.run(
        [sys.executable, "-m", "lune.cli", "sweep", str(config), "--db", str(db)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "4 points" in out.stdout
    stores = sorted((tmp_path / "runs" / "sweep-quality" / "sweep" / "data").glob("*.duckdb"))
    assert [stage_runs(str(s)) for s in stores] == [
        {"ingest": 1, "generate": 1, "score": 1, "curate": 2, "teach": 1}
    ] * 2
    with Store(db, read_only=True) as store:
        usr = store.query("SELECT axis_values, value FROM sweep_points WHERE metric = 'usr' AND model_label = 'lune'")
    assert len(usr) == 4
