"""`lune sweep`: run every point of a sweep file, reusing what points share, and compare them.

    from lune.flows.sweep import sweep_flow
    summary = sweep_flow("lune.duckdb", "configs/sweep-quality.yaml")

How a sweep runs (wiring only; the points are ``flows.sweep_config``, the report
``evaluation.sweep_report``, the SQL ``data.sweep_queries``):

1. every point is expanded and validated before anything runs (``load_sweep``);
2. *data* (in this process, one point after another): the points whose ingest, select, generate and
   score sections agree share one *data store* (``<workdir>/sweep/data/<key>.duckdb``): curation mixes
   every candidate of a store, so two negative sources must not meet in one. In it each stage runs
   under a run id hashed from its own section and those of the stages it reads
   (``flows.pipeline.StageRunner``), so a completed stage is handed back, not run again: points that
   differ only in rank or method generate, score, curate and teach once;
3. *points* (Prefect tasks on the sweep's task runner: threads, or Dask worker processes on one
   or many machines): each copies its data store into its own folder
   (``<workdir>/sweep/points/<point_id>/``: DuckDB lets one process write a file, and workers are
   processes), unlearns and evaluates there, its torch threads sized to the cores it owns
   (``core.threads``), and returns its numbers. A point already measured (its id is the hash of its
   config) is not run again;
4. this process writes one ``sweep_points`` row per point, model and metric into ``db`` and the
   report (``<workdir>/sweep/report-<sweep_id>/``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.futures import as_completed

from lune.core.progress import announce
from lune.data import sweep_queries
from lune.data.errors import LuneError
from lune.data.ids import content_id
from lune.data.store import Store
from lune.flows.config import PipelineConfig
from lune.flows.pipeline import StageRunner, select_stage, selects
from lune.flows.sweep_config import SweepConfig, SweepFileConfig, SweepPoint, base_tree, load_sweep
from lune.flows.task_runners import make_task_runner, nanny_env_warning


def _dump(section: Any) -> dict[str, Any]:
    return section.model_dump(mode="json")


def stage_keys(config: PipelineConfig) -> dict[str, str]:
    """The content key of each shared stage: a hash of its own section and of those it reads.
    Same key, same outputs: a completed stage with that key is reused (its run id derives from it)."""
    ingest = content_id("sweep-ingest", _dump(config.ingest))[:16]
    # The select step changes which facts the later stages see; without it the keys are as before.
    select = content_id("sweep-select", ingest, _dump(config.probe), _dump(config.select), config.model)[:16]
    facts = select if selects(config) else ingest
    generate = content_id("sweep-generate", facts, _dump(config.generate))[:16]
    score = content_id("sweep-score", generate, _dump(config.score))[:16]
    return {
        "ingest": ingest,
        "select": select,
        "generate": generate,
        "score": score,
        "curate": content_id("sweep-curate", score, _dump(config.curate))[:16],
        "teach": content_id("sweep-teach", facts, _dump(config.teach), config.model)[:16],
        "data": score,  # the data store: one per ingest + generate + score
    }


def sweep_id_of(config: SweepFileConfig) -> str:
    """The sweep's id: a hash of the whole resolved sweep file (axes included)."""
    return content_id("sweep", config.model_dump(mode="json"))[:16]


def sweep_dir(config: PipelineConfig) -> Path:
    return Path(config.workdir) / "sweep"


def prepare_data(config: PipelineConfig, say: Callable[[str], None] = announce) -> dict[str, Any]:
    """Run (or hand back) the point's shared stages in its data store; return the store, the
    curated set and the taught models (plain data)."""
    from lune.flows.curate import curate_set
    from lune.flows.generate import build_negatives
    from lune.flows.ingest import ingest_flow
    from lune.flows.score import score_candidates
    from lune.flows.teach import teach_flow

    keys = stage_keys(config)
    root = sweep_dir(config)
    db = str(root / "data" / f"{keys['data']}.duckdb")
    reused: list[str] = []

    def stage(name: str, work: Callable[[str], dict[str, Any]], section: Any) -> dict[str, Any]:
        runner = StageRunner(store, keys[name], say)
        out = runner(name, work, config=_dump(section) if section is not None else {})
        reused.extend(runner.reused)
        return out

    with Store.open(db) as store:
        stage("ingest", lambda rid: ingest_flow(db, config.ingest, run_id=rid), config.ingest)
        selecting = StageRunner(store, keys["select"], say)
        select_stage(selecting, store, db, config)
        reused.extend(selecting.reused)
        stage("generate", lambda rid: build_negatives(db, config.generate, run_id=rid), config.generate)
        stage("score", lambda rid: score_candidates(db, config.score, config.curate, run_id=rid), config.score)
        curated = stage("curate", lambda rid: curate_set(db, config.curate, config.score, run_id=rid), config.curate)
        if config.teach.enabled:
            taught = stage("teach", lambda rid: teach_flow(db, str(root), config.teach, run_id=rid), config.teach)
            model_dir, retain_dir = taught["model_dir"], taught.get("retain_model_dir")
        else:
            model_dir, retain_dir = config.model, config.evaluate.retain_model
            if not model_dir:
                raise LuneError("teach.enabled is false, so the config's `model` must name the model to unlearn")
    return {
        "data_store": db,
        "set_id": curated["set_id"],
        "counts": curated.get("counts", {}),
        "model_dir": model_dir,
        "retain_model_dir": retain_dir,
        "reused": reused,
    }


def negatives_per_fact(counts: dict[str, Any]) -> float | None:
    """Negatives the curated set kept per fact in its scope (from the curate stage's counts)."""
    kept = sum(n for key, n in (counts.get("kept") or {}).items() if str(key).split(":")[0] == "negative")
    facts = counts.get("facts") or 0
    return kept / facts if facts else None


def run_point(point: dict[str, Any], data: dict[str, Any], workers: int = 1) -> dict[str, Any]:
    """Unlearn and evaluate one point in its own folder and store (a copy of its data store);
    return its headline metrics per model and its cost. Plain data in and out (a Dask worker runs it)."""
    from lune.core.threads import torch_threads
    from lune.flows.evaluate import evaluate_flow
    from lune.flows.unlearn import unlearn_flow

    config = PipelineConfig.model_validate(point["config"])
    folder = sweep_dir(config) / "points" / point["point_id"]
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "lune.duckdb"
    # Fresh each time: a point's store holds the shared stages and its own runs only. The write-ahead
    # log goes along when one is left (the data store is closed here, so the pair is consistent).
    for suffix in ("", ".wal"):
        source, target = Path(data["data_store"] + suffix), Path(str(db) + suffix)
        target.unlink(missing_ok=True)
        if source.exists():
            shutil.copyfile(source, target)
    method = config.unlearn.method
    if warning := nanny_env_warning():
        print(f"warning: {warning}")
    began, began_at = time.perf_counter(), time.time()
    with torch_threads(workers) as threads:
        started = time.perf_counter()
        unlearned = unlearn_flow(
            str(db),
            data["model_dir"],
            str(folder / "unlearned" / method),
            set_name=data["set_id"],
            config=_dump(config.unlearn.for_method(method)),
            progress=False,
        )
        train_seconds = unlearned.get("metrics", {}).get("run_wall_s") or (time.perf_counter() - started)
        outcome = evaluate_flow(
            str(db),
            data["model_dir"],
            {method: unlearned.get("adapter_dir") or unlearned["out_dir"]},
            retain_model=data["retain_model_dir"],
            set_name=data["set_id"],
            out_dir=str(folder / "report"),
            config=_dump(config.evaluate),
        )
    headline = {label: dict(values) for label, values in outcome.headline.items()}
    if method in headline:  # what the curated set held: equal counts are what a quality comparison needs
        headline[method]["negatives_per_fact"] = negatives_per_fact(data.get("counts", {}))
    return {
        "point_id": point["point_id"],
        "headline": headline,
        "train_seconds": float(train_seconds),
        "trainable_params": unlearned.get("metrics", {}).get("trainable_params"),
        "point_store": str(db),
        "report_md": outcome.report_files.get("report_md"),
        "threads": threads,
        "pid": os.getpid(),
        "started_at": began_at,  # wall clock: when the point began in its worker, and how long it took
        "point_seconds": time.perf_counter() - began,
    }


@task(name="sweep-point", cache_policy=NONE, persist_result=False)
def point_task(point: dict[str, Any], data: dict[str, Any], workers: int) -> dict[str, Any]:
    """One point in a worker (a thread, or a Dask worker process)."""
    return run_point(point, data, workers)


def point_rows(sweep_id: str, point: SweepPoint, result: dict[str, Any], run_id: str | None) -> list[dict[str, Any]]:
    """The ``sweep_points`` rows of one measured point: one per model label and metric."""
    rows = []
    for label, metrics in sorted(result["headline"].items()):
        for metric, value in sorted(metrics.items()):
            if value is not None and not isinstance(value, (int, float)):
                continue
            rows.append(
                {
                    "sweep_id": sweep_id,
                    "point_id": point.point_id,
                    "seed": point.seed,
                    "axis_values": point.values,
                    "settings": point.settings,
                    "model_label": label,
                    "metric": metric,
                    "value": None if value is None else float(value),
                    "train_seconds": result.get("train_seconds"),
                    "trainable_params": result.get("trainable_params"),
                    "point_store": result.get("point_store"),
                    "run_id": run_id,
                }
            )
    return rows


def _stored_result(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A point measured before, rebuilt from its rows (the newest sweep's)."""
    newest = rows[0]["sweep_id"]
    headline: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["sweep_id"] == newest:
            headline.setdefault(row["model_label"], {})[row["metric"]] = row["value"]
    first = rows[0]
    return {
        "headline": headline,
        "train_seconds": first["train_seconds"],
        "trainable_params": first["trainable_params"],
        "point_store": first["point_store"],
    }


def run_points(
    sweep: SweepConfig,
    pending: list[SweepPoint],
    prepared: dict[str, dict[str, Any]],
    results: dict[str, dict[str, Any]],
) -> list[str]:
    """Run ``pending`` as tasks on the sweep's runner, filling ``results``; return the failures
    (one failed point does not stop the others)."""
    failures: list[str] = []
    if not pending:
        return failures
    from contextlib import nullcontext

    from lune.core.threads import torch_threads

    # Points on threads share this process's torch threads: size them once here for all of them
    # (each point's own sizing, nested, keeps it); Dask workers are processes and size their own.
    sized = torch_threads(sweep.workers) if sweep.task_runner == "threads" else nullcontext()
    with (
        sized,
        make_task_runner(sweep.task_runner, sweep.workers, sweep.dask_address, setting="sweep.task_runner") as runner,
    ):
        futures = {
            runner.submit(
                point_task,
                parameters={
                    "point": {"point_id": p.point_id, "config": base_tree(p.config)},
                    "data": prepared[p.point_id],
                    "workers": sweep.workers,
                },
            ): p
            for p in pending
        }
        started = time.perf_counter()
        for finished, future in enumerate(as_completed(list(futures)), start=1):
            point = futures[future]
            progress = point_progress(finished, len(futures), time.perf_counter() - started)
            try:
                results[point.point_id] = future.result()
            except Exception as err:
                failures.append(f"{point.values} seed {point.seed}: {err}")
                announce(f"sweep point {point.point_id} failed ({progress}): {err}")
                continue
            announce(f"sweep point {point.values} seed {point.seed} done ({progress})")
    return failures


def point_progress(finished: int, total: int, elapsed: float) -> str:
    """How far the points are, for the log: the count, the time so far and a linear estimate of
    the rest (points of one sweep cost about the same).

    >>> point_progress(1, 3, 540.0)
    '1/3 points, 9.0 min so far, about 18.0 min left'
    >>> point_progress(3, 3, 1620.0)
    '3/3 points, 27.0 min so far'
    """
    said = f"{finished}/{total} points, {elapsed / 60:.1f} min so far"
    if finished < total:
        said += f", about {elapsed / finished * (total - finished) / 60:.1f} min left"
    return said


@flow(name="lune-sweep", log_prints=True)
def sweep_flow(db: str, path: str, *, report: bool = True) -> dict[str, Any]:
    """Run the sweep file ``path`` with its results in the store ``db``; return the sweep id, each
    point's numbers, the data stores, which stages were reused, and the report files."""
    file_config, points = load_sweep(path)  # every point validated before anything runs
    sweep = file_config.sweep
    sweep_id = sweep_id_of(file_config)
    announce(f"sweep {sweep_id}: {len(points)} points on {sweep.task_runner} ({sweep.workers} workers)")
    started = time.perf_counter()
    # The results store stays open for the whole sweep (its `runs` row spans it); points write only
    # to their own stores, the shared stages to the data stores.
    with Store.open(db) as store, store.run("sweep", base_tree(file_config) | {"sweep": _dump(sweep)}) as run:
        done = {p.point_id: sweep_queries.point_rows(store, p.point_id) for p in points}
        results: dict[str, dict[str, Any]] = {pid: _stored_result(rows) for pid, rows in done.items() if rows}
        pending = [p for p in points if p.point_id not in results]
        if results:
            announce(f"sweep {sweep_id}: {len(results)} points already measured; reusing their numbers")
        prepared, reused = {}, []
        for point in pending:  # shared stages, once per content key, in this process
            prepared[point.point_id] = prepare_data(point.config)
            reused.extend(prepared[point.point_id]["reused"])
        failures = run_points(sweep, pending, prepared, results)
        rows = [
            r for p in points if p.point_id in results for r in point_rows(sweep_id, p, results[p.point_id], run.run_id)
        ]
        sweep_queries.write_points(store, rows)
        files: dict[str, str] = {}
        if report and rows:
            from lune.evaluation.sweep_report import write_report

            stored = sweep_queries.sweep_rows(store, sweep_id)
            files = write_report(stored, sweep_dir(file_config) / f"report-{sweep_id}", axes=axis_labels(sweep))
        run.metrics.update({"points": len(points), "measured": len(pending) - len(failures), "failed": len(failures)})
        run.artefacts.update({"sweep_id": sweep_id, "report_files": files, "failures": failures})
        if failures:
            run.fail(f"{len(failures)} point(s) failed")
    summary = {
        "sweep_id": sweep_id,
        "points": [
            {"point_id": p.point_id, "values": p.values, "seed": p.seed, **results.get(p.point_id, {})} for p in points
        ],
        "data_stores": sorted({d["data_store"] for d in prepared.values()}),
        "reused_stages": reused,
        "report_files": files,
        "failures": failures,
        "wall_seconds": time.perf_counter() - started,
    }
    if failures:
        raise LuneError(
            f"sweep {sweep_id}: {len(failures)} point(s) failed; rerun to retry them: " + "; ".join(failures)
        )
    return json.loads(json.dumps(summary, default=str))


def axis_labels(sweep: SweepConfig) -> list[str]:
    return [axis.label for axis in sweep.axes]
