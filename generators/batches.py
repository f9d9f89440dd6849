"""One generate run over batches, without Prefect: what is left to do, writing a batch, the tally.

The flow (``flows/generate.py``) only runs the pending batches as tasks; everything it decides or
writes is here, so a test or another executor can drive a run the same way:

    >>> plan = plan_run(store, config)            # facts, backend spec, batches; completed ones skipped
    >>> tally = Tally()
    >>> for batch in plan.pending:
    ...     out = generate_batch(batch.facts, plan.spec, config, run_id=run_id, batch_id=batch.batch_id)
    ...     tally.add(batch, out, new=write_batch(store, batch, out, run_id))
    >>> summary = tally.summary(run_id, plan, config.backend, seconds)

Resumption: a batch id hashes its fact ids and everything that shapes its output
(``generators.generate.plan_batches``); a batch whose id is in ``generation_batches`` was written
completely by an earlier run (:func:`write_batch` commits its candidates, rejections and record
together), so :func:`plan_run` leaves it out and a rerun generates only the missing batches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lune.data import generation_queries as queries
from lune.data.store import Store
from lune.generators import generate as stage
from lune.generators.config import GenerateConfig
from lune.generators.rules.spans import SpanBank


def redacted(config: GenerateConfig) -> dict[str, Any]:
    """The resolved config as stored in ``runs``: without the API key."""
    data = config.model_dump(mode="json")
    if data.get("openai", {}).get("api_key"):
        data["openai"]["api_key"] = "***"
    return data


@dataclass(frozen=True)
class RunPlan:
    """The facts of a run, the backend spec its tasks build, its batches and those still to generate."""

    facts: list[dict[str, Any]]
    spec: dict[str, Any]
    batches: list[stage.Batch]
    pending: list[stage.Batch]

    @property
    def skipped(self) -> int:
        """Batches an earlier run completed."""
        return len(self.batches) - len(self.pending)


def plan_run(store: Store, config: GenerateConfig) -> RunPlan:
    """Read the configured facts (with the span bank and dataset probes the backend needs), cut them
    into batches and leave out the batches already stored."""
    facts = queries.select_facts(store, split=config.split, where=config.where)
    bank = None
    if stage.needs_bank(config.backend) and facts:
        bank = SpanBank.from_facts(queries.corpus_facts(store, {f["corpus"] for f in facts}))
    if stage.needs_probes(config.backend, config) and facts:
        probes = queries.probes_for_facts(store, [f["fact_id"] for f in facts])
        for fact in facts:
            fact["probes"] = probes.get(fact["fact_id"], [])
    spec = stage.backend_spec(config, bank=bank)
    batches = stage.plan_batches(facts, config.batch_size, spec, config)
    done = queries.completed_batches(store, [b.batch_id for b in batches])
    return RunPlan(facts, spec, batches, [b for b in batches if b.batch_id not in done])


def write_batch(store: Store, batch: stage.Batch, out: Mapping[str, Any], run_id: str) -> int:
    """One transaction: the batch's candidates, its rejections and its completion record; returns
    how many candidates were new."""
    stats = out["stats"]
    with store.transaction():
        new = store.insert("candidates", out["candidates"])
        if out["rejections"]:
            store.reject(out["rejections"])
        queries.record_batch(
            store,
            {
                "batch_id": batch.batch_id,
                "run_id": run_id,
                "generator": stats["generator"],
                "model": stats["model"],
                "batch_index": batch.index,
                "facts": len(batch.facts),
                "fact_ids": batch.fact_ids,
                "requests": stats["requests"],
                "outputs": stats["outputs"],
                "candidates": stats["candidates"],
                "new_candidates": new,
                "rejected": stats["rejected"],
                "seconds": round(stats["seconds"], 4),
            },
        )
    return new


@dataclass
class Tally:
    """What the batches of a run made, and which failed (after their retries)."""

    totals: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[int, str]] = field(default_factory=list)

    def add(self, batch: stage.Batch, out: Mapping[str, Any], *, new: int) -> None:
        """A batch written, ``new`` of its candidates not stored before."""
        stats = out["stats"]
        self.totals.update(
            {
                "batches": 1,
                "facts": len(batch.facts),
                "candidates": stats["candidates"],
                "new_candidates": new,
                "rejected": stats["rejected"],
                "outputs": stats["outputs"],
                "requests": stats["requests"],
            }
        )
        self.by_kind.update(stats["by_kind"])

    def fail(self, batch: stage.Batch, error: BaseException) -> None:
        self.failed.append((batch.index, f"{type(error).__name__}: {error}"))

    def summary(self, run_id: str, plan: RunPlan, backend: str, seconds: float) -> dict[str, Any]:
        """The run's summary (returned by the flow and stored as the run's metrics)."""
        totals = self.totals
        return {
            "run_id": run_id,
            "backend": backend,
            "facts": len(plan.facts),
            "batches": len(plan.batches),
            "skipped_batches": plan.skipped,
            "generated_batches": totals["batches"],
            "failed_batches": sorted(i for i, _ in self.failed),
            "candidates": totals["candidates"],
            "new_candidates": totals["new_candidates"],
            "rejected": totals["rejected"],
            "requests": totals["requests"],
            "outputs": totals["outputs"],
            "by_kind": dict(self.by_kind),
            "seconds": round(seconds, 3),
            "candidates_per_s": round(totals["candidates"] / seconds, 1) if seconds > 0 else None,
        }

    def failure(self, batches: int) -> str | None:
        """The message of a run whose batches failed (None when none did): which, the first error,
        and that the same command resumes."""
        if not self.failed:
            return None
        return (
            f"{len(self.failed)} of {batches} generation batches failed (batches "
            f"{', '.join(str(i) for i in sorted(i for i, _ in self.failed))}; first error: {self.failed[0][1]}); "
            "the other batches are stored: run the same command again to generate only the missing ones"
        )
