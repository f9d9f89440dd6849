"""SQL of the whole-pipeline flow: which stages of a pipeline run are already done (resume)."""

from __future__ import annotations

import json
from typing import Any

from data.store import Store


OUTPUTS_KEY = "pipeline_outputs"


def completed_outputs(store: Store, stage_run_id: str) -> dict[str, Any] | None:
    """What a completed stage run handed to the next stage, or None if it has not completed."""
    rows = store.query("SELECT status, artefacts FROM runs WHERE run_id = ?", [stage_run_id])
    if not rows or rows[0]["status"] != "completed":
        return None
    artefacts = json.loads(rows[0]["artefacts"] or "{}")
    return artefacts.get(OUTPUTS_KEY)


def record_outputs(store: Store, stage_run_id: str, outputs: dict[str, Any]) -> None:
    """Mark a stage run completed and keep its outputs beside the artefacts the stage recorded."""
    rows = store.query("SELECT artefacts FROM runs WHERE run_id = ?", [stage_run_id])
    artefacts = json.loads(rows[0]["artefacts"] or "{}") if rows else {}
    artefacts[OUTPUTS_KEY] = outputs
    store.execute(
        "UPDATE runs SET status = 'completed', finished_at = coalesce(finished_at, current_timestamp), "
        "artefacts = ?, error = NULL WHERE run_id = ?",
        [json.dumps(artefacts, default=str), stage_run_id],
    )


def stage_runs(store: Store, pipeline_run_id: str) -> list[dict[str, Any]]:
    """Every stage run of a pipeline run, oldest first, with status and wall time in seconds."""
    return store.query(
        "SELECT run_id, kind, status, started_at, finished_at, "
        "date_diff('millisecond', started_at, finished_at) / 1000.0 AS seconds, error "
        "FROM runs WHERE parent_run_id = ? ORDER BY started_at",
        [pipeline_run_id],
    )


def pipeline_status(store: Store, pipeline_run_id: str) -> str | None:
    return store.scalar("SELECT status FROM runs WHERE run_id = ?", [pipeline_run_id])
