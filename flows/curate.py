"""The curate stage as a Prefect flow: ``curated_sets, curated_items, candidate_verdicts <- scores``.

Wiring only; the work is ``generators.curation.curate_stage``:

    curate_set("lune.duckdb", CurateConfig(name="tofu-forget10"))
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from lune.generators.config import CurateConfig, ScoreConfig


@task(name="curate")
def curate_task(
    db: str, curate: dict[str, Any], score: dict[str, Any], run_id: str | None, parent_run_id: str | None
) -> dict[str, Any]:
    from lune.data.store import Store
    from lune.generators.curation import curate_stage

    with Store.open(db) as store:
        result = curate_stage(
            store,
            CurateConfig.model_validate(curate),
            ScoreConfig.model_validate(score),
            run_id=run_id,
            parent_run_id=parent_run_id,
        )
    return {
        "set_id": result.set_id,
        "name": result.name,
        "version": result.version,
        "created": result.created,
        "counts": result.counts,
    }


@flow(name="curate_set")
def curate_set(
    db: str,
    config: dict[str, Any] | CurateConfig | None = None,
    score: dict[str, Any] | ScoreConfig | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Apply the curation policy and save the next version of the named set; return its id and counts."""
    cur = config if isinstance(config, CurateConfig) else CurateConfig.model_validate(config or {})
    sc = score if isinstance(score, ScoreConfig) else ScoreConfig.model_validate(score or {})
    return curate_task(str(db), cur.model_dump(), sc.model_dump(), run_id, parent_run_id)
