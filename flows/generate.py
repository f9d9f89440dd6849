"""Prefect flow ``build_negatives``: facts -> batches -> generation tasks -> one writer -> candidates.

    from lune.flows.generate import build_negatives
    summary = build_negatives("lune.duckdb", {"backend": "rules", "kinds": ["negative", "attack"]})

Wiring only (the logic is ``generators.generate`` and ``generators.batches``, the SQL
``data.generation_queries``):

1. a ``runs`` row with the resolved config (secrets redacted);
2. the facts of the configured split / WHERE filter, cut into batches with content-hash ids;
   batches a previous run completed are skipped;
3. one Prefect task per remaining batch, on threads (``ThreadPoolTaskRunner``, default) or Dask
   worker processes (``prefect_dask.DaskTaskRunner``, ``task_runner: dask``); tasks get plain data
   (facts, a backend spec with model *paths*) and build / cache their backend once per process;
   a failed task is retried ``task_retries`` times;
4. the flow process alone writes: each finished batch's candidates, rejections and batch record
   in one transaction, so a kill loses at most the batches in flight, and a rerun regenerates only
   those (candidate ids are content hashes too, so nothing is ever written twice);
5. progress (batches, candidates/s, ETA) on the Prefect logger and a tqdm bar.

A batch that still fails after its retries does not stop the others; the flow then fails with a
message naming the batches, and the same command resumes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import task_run

from lune.core.model_refs import resolve_model
from lune.data.errors import LuneError
from lune.data.store import Store
from lune.flows.task_runners import make_task_runner
from lune.generators import generate as stage
from lune.generators.batches import RunPlan, Tally, plan_run, redacted, write_batch
from lune.generators.config import GenerateConfig
from lune.generators.faults import active_faults
from lune.generators.progress import Progress


@task(name="generate-batch", cache_policy=NO_CACHE, persist_result=False)
def generate_batch_task(
    facts: list[dict[str, Any]],
    spec: dict[str, Any],
    config: dict[str, Any],
    run_id: str,
    batch_id: str,
    batch_index: int,
) -> dict[str, Any]:
    """Generate one batch in a worker (thread or Dask process); returns rows, writes nothing."""
    active_faults().check(batch_index, attempt=task_run.run_count)
    return stage.generate_batch(facts, spec, config, run_id=run_id, batch_id=batch_id)


def run_batches(store: Store, cfg: GenerateConfig, plan: RunPlan, run_id: str, logger: Any) -> Tally:
    """Run the pending batches as tasks on the configured runner; write each one as it finishes."""
    task_fn = generate_batch_task.with_options(retries=cfg.task_retries, retry_delay_seconds=cfg.retry_delay_s)
    task_config = cfg.model_dump(mode="json")
    tally = Tally()
    with Progress(len(plan.pending), sum(len(b.facts) for b in plan.pending), logger) as progress:
        if not plan.pending:
            return tally
        with make_task_runner(cfg.task_runner, cfg.workers, cfg.dask_address, setting="generate.task_runner") as runner:
            futures = {
                runner.submit(
                    task_fn,
                    parameters={
                        "facts": b.facts,
                        "spec": plan.spec,
                        "config": task_config,
                        "run_id": run_id,
                        "batch_id": b.batch_id,
                        "batch_index": b.index,
                    },
                ): b
                for b in plan.pending
            }
            for future in as_completed(list(futures)):
                batch = futures[future]
                try:
                    out = future.result()
                except Exception as err:  # a batch that failed after its retries: the others go on
                    tally.fail(batch, err)
                    logger.error("batch %d (%s) failed: %s", batch.index, batch.batch_id, err)
                    continue
                tally.add(batch, out, new=write_batch(store, batch, out, run_id))
                progress.update(len(batch.facts), out["stats"]["candidates"])
    return tally


@flow(name="build_negatives", log_prints=False, validate_parameters=False)
def build_negatives(
    db: str,
    config: GenerateConfig | Mapping[str, Any] | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Generate candidates for the configured facts into the store at ``db``; returns a summary."""
    cfg = stage.as_config(config or {})
    logger = get_run_logger()
    started = time.perf_counter()
    with (
        Store.open(db) as store,
        store.run("generate", redacted(cfg), run_id=run_id, parent_run_id=parent_run_id) as run,
    ):
        if cfg.backend in ("transformers", "vllm"):
            # A GGUF file or a known name is converted here, once, before the batch tasks load the folder.
            run.artefacts["model_folder"] = str(resolve_model(cfg.model, "generate.model"))
        plan = plan_run(store, cfg)
        logger.info(
            "generate (%s): %d facts in %d batches, %d already complete, %d to generate",
            cfg.backend,
            len(plan.facts),
            len(plan.batches),
            plan.skipped,
            len(plan.pending),
        )
        tally = run_batches(store, cfg, plan, run.run_id, logger)
        seconds = time.perf_counter() - started
        summary = tally.summary(run.run_id, plan, cfg.backend, seconds)
        run.metrics.update(summary)
        failure = tally.failure(len(plan.batches))
        if failure:
            raise LuneError(failure)
    logger.info(
        "generate: %d new candidates (%s), %d rejections, %.1f s",
        summary["new_candidates"],
        ", ".join(f"{k} {v}" for k, v in sorted(summary["by_kind"].items())) or "none",
        summary["rejected"],
        seconds,
    )
    return summary
