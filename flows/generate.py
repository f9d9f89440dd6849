"""Prefect flow ``build_negatives``: facts -> batches -> generation tasks -> one writer -> candidates.

    from lune.flows.generate import build_negatives
    summary = build_negatives("lune.duckdb", {"backend": "rules", "kinds": ["negative", "attack"]})

Wiring only (the logic is ``generators.generate``, the SQL ``data.generation_queries``):

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
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from lune.data import generation_queries as queries
from lune.data.errors import LuneError
from lune.data.store import Store
from lune.generators import generate as stage
from lune.generators.config import GenerateConfig
from lune.generators.rules.spans import SpanBank


class InjectedFailure(RuntimeError):
    """Raised by the test hooks ``fail_batches`` / ``flaky_batches``."""


@task(name="generate-batch", cache_policy=NO_CACHE, persist_result=False)
def generate_batch_task(facts: list[dict[str, Any]], spec: dict[str, Any], settings: dict[str, Any],
                        run_id: str, batch_id: str, batch_index: int, fail: bool = False,
                        flaky: bool = False) -> dict[str, Any]:
    """Generate one batch in a worker (thread or Dask process); returns rows, writes nothing."""
    if fail:
        raise InjectedFailure(f"injected failure in batch {batch_index}")
    if flaky:
        from prefect.runtime import task_run

        if task_run.run_count <= 1:
            raise InjectedFailure(f"injected first-attempt failure in batch {batch_index}")
    return stage.generate_batch(facts, spec, settings, run_id=run_id, batch_id=batch_id)


def resolve_config(config: GenerateConfig | Mapping[str, Any] | None) -> GenerateConfig:
    if isinstance(config, GenerateConfig):
        return config
    return GenerateConfig.model_validate(dict(config or {}))


def redacted(config: GenerateConfig) -> dict[str, Any]:
    """The resolved config as stored in ``runs``: without the API key."""
    data = config.model_dump(mode="json")
    if data.get("openai", {}).get("api_key"):
        data["openai"]["api_key"] = "***"
    return data


def make_task_runner(config: GenerateConfig) -> Any:
    if config.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise LuneError("generate.task_runner dask needs the prefect-dask package (pip install prefect-dask)") from None
        if config.dask_address:
            return DaskTaskRunner(address=config.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": config.workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=config.workers)


class Progress:
    """Batches done, candidates/s and ETA, to the Prefect logger and a tqdm bar."""

    def __init__(self, total_batches: int, total_facts: int, logger: Any):
        from tqdm import tqdm

        self.total_batches, self.total_facts, self.logger = total_batches, total_facts, logger
        self.batches = self.facts = self.candidates = 0
        self.started = time.perf_counter()
        self.bar = tqdm(total=total_facts, unit="fact", desc="generate", disable=None, leave=False)

    def update(self, facts: int, candidates: int) -> None:
        self.batches += 1
        self.facts += facts
        self.candidates += candidates
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.candidates / elapsed
        eta = elapsed / self.facts * (self.total_facts - self.facts) if self.facts else float("nan")
        self.bar.update(facts)
        self.bar.set_postfix(candidates=self.candidates, rows_per_s=f"{rate:,.0f}")
        self.logger.info("batch %d/%d done: %d facts, %d candidates so far, %.0f rows/s, ETA %.0f s",
                         self.batches, self.total_batches, self.facts, self.candidates, rate, eta)

    def close(self) -> None:
        self.bar.close()


@flow(name="build_negatives", log_prints=False, validate_parameters=False)
def build_negatives(db: str, config: GenerateConfig | Mapping[str, Any] | None = None, run_id: str | None = None,
                    parent_run_id: str | None = None, fail_batches: Sequence[int] = (),
                    flaky_batches: Sequence[int] = ()) -> dict[str, Any]:
    """Generate candidates for the configured facts into the store at ``db``; returns a summary.

    ``fail_batches`` / ``flaky_batches`` are test hooks: batch indices whose task always fails /
    fails on its first attempt only.
    """
    cfg = resolve_config(config)
    logger = get_run_logger()
    settings = stage.GenerationSettings.from_config(cfg)
    started = time.perf_counter()
    store = Store.open(db)
    try:
        run_id = store.start_run("generate", redacted(cfg), run_id=run_id, parent_run_id=parent_run_id)
        facts = queries.select_facts(store, split=cfg.split, where=cfg.where)
        bank = None
        if stage.needs_bank(cfg.backend) and facts:
            bank = SpanBank.from_facts(queries.corpus_facts(store, {f["corpus"] for f in facts}))
        if stage.needs_probes(cfg.backend, settings) and facts:
            probes = queries.probes_for_facts(store, [f["fact_id"] for f in facts])
            for fact in facts:
                fact["probes"] = probes.get(fact["fact_id"], [])
        spec = stage.backend_spec(cfg, bank=bank)
        batches = stage.plan_batches(facts, cfg.batch_size, spec, settings)
        done = queries.completed_batches(store, [b.batch_id for b in batches])
        pending = [b for b in batches if b.batch_id not in done]
        logger.info("generate (%s): %d facts in %d batches, %d already complete, %d to generate",
                    cfg.backend, len(facts), len(batches), len(batches) - len(pending), len(pending))

        task_fn = generate_batch_task.with_options(retries=cfg.task_retries, retry_delay_seconds=cfg.retry_delay_s)
        fail, flaky = set(fail_batches), set(flaky_batches)
        totals: Counter[str] = Counter()
        by_kind: Counter[str] = Counter()
        failed: list[tuple[int, str]] = []
        progress = Progress(len(pending), sum(len(b.facts) for b in pending), logger)
        try:
            if pending:
                with make_task_runner(cfg) as runner:
                    futures = {
                        runner.submit(task_fn, parameters={
                            "facts": b.facts, "spec": spec, "settings": settings.to_dict(), "run_id": run_id,
                            "batch_id": b.batch_id, "batch_index": b.index, "fail": b.index in fail,
                            "flaky": b.index in flaky}): b
                        for b in pending
                    }
                    for future in as_completed(list(futures)):
                        batch = futures[future]
                        try:
                            out = future.result()
                        except Exception as err:  # a batch that failed after its retries: the others go on
                            failed.append((batch.index, f"{type(err).__name__}: {err}"))
                            logger.error("batch %d (%s) failed: %s", batch.index, batch.batch_id, err)
                            continue
                        new = _write_batch(store, batch, out, run_id)
                        stats = out["stats"]
                        totals.update({"batches": 1, "facts": len(batch.facts), "candidates": stats["candidates"],
                                       "new_candidates": new, "rejected": stats["rejected"],
                                       "outputs": stats["outputs"], "requests": stats["requests"]})
                        by_kind.update(stats["by_kind"])
                        progress.update(len(batch.facts), stats["candidates"])
        finally:
            progress.close()

        seconds = time.perf_counter() - started
        summary = {
            "run_id": run_id, "backend": cfg.backend, "facts": len(facts), "batches": len(batches),
            "skipped_batches": len(batches) - len(pending), "generated_batches": totals["batches"],
            "failed_batches": sorted(i for i, _ in failed), "candidates": totals["candidates"],
            "new_candidates": totals["new_candidates"], "rejected": totals["rejected"],
            "requests": totals["requests"], "outputs": totals["outputs"], "by_kind": dict(by_kind),
            "seconds": round(seconds, 3),
            "candidates_per_s": round(totals["candidates"] / seconds, 1) if seconds > 0 else None,
        }
        if failed:
            first = failed[0][1]
            message = (f"{len(failed)} of {len(batches)} generation batches failed (batches "
                       f"{', '.join(str(i) for i in summary['failed_batches'])}; first error: {first}); the other "
                       "batches are stored: run the same command again to generate only the missing ones")
            store.finish_run(run_id, status="failed", metrics=summary, error=message)
            raise LuneError(message)
        store.finish_run(run_id, metrics=summary)
        logger.info("generate: %d new candidates (%s), %d rejections, %.1f s", summary["new_candidates"],
                    ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())) or "none", summary["rejected"], seconds)
        return summary
    finally:
        store.close()
        # A failed run's exception (kept by Prefect in the flow state) holds this frame: drop the
        # connection object so it does not outlive the run.
        del store


def _write_batch(store: Store, batch: stage.Batch, out: Mapping[str, Any], run_id: str) -> int:
    """One transaction: the batch's candidates, its rejections and its completion record."""
    stats = out["stats"]
    with store.transaction():
        new = store.insert("candidates", out["candidates"])
        if out["rejections"]:
            store.reject(out["rejections"])
        queries.record_batch(store, {
            "batch_id": batch.batch_id, "run_id": run_id, "generator": stats["generator"], "model": stats["model"],
            "batch_index": batch.index, "facts": len(batch.facts), "fact_ids": batch.fact_ids,
            "requests": stats["requests"], "outputs": stats["outputs"], "candidates": stats["candidates"],
            "new_candidates": new, "rejected": stats["rejected"], "seconds": round(stats["seconds"], 4),
        })
    return new
