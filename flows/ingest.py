"""The ingest stage as a Prefect flow: ``facts, probes <- benchmark files / a user's file``.

Wiring only; the work is ``data.ingest.ingest``. The pipeline calls this as a subflow with the run id
it created for the stage:

    ingest_flow("lune.duckdb", [{"format": "tofu", "path": "data/sample/tofu", "forget": "forget01"}])
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from lune.data.config import IngestConfig, IngestSource


@task(name="ingest-sources")
def ingest_sources(
    db: str, sources: list[dict[str, Any]], run_id: str | None, parent_run_id: str | None
) -> dict[str, Any]:
    """Open the store, ingest every source as one run, return the counts."""
    from lune.data.ingest import ingest
    from lune.data.store import Store

    with Store.open(db) as store:
        return ingest(store, sources, run_id=run_id, parent_run_id=parent_run_id).as_dict()


@flow(name="ingest")
def ingest_flow(
    db: str, sources: list[dict[str, Any]] | IngestConfig, run_id: str | None = None, parent_run_id: str | None = None
) -> dict[str, Any]:
    """Ingest ``sources`` (dicts of ``IngestSource`` fields, or an ``IngestConfig``) into ``db``."""
    if isinstance(sources, IngestConfig):
        sources = [s.model_dump() for s in sources.sources]
    sources = [s.model_dump() if isinstance(s, IngestSource) else dict(s) for s in sources]
    return ingest_sources(str(db), sources, run_id, parent_run_id)
