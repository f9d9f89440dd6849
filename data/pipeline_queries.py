"""SQL of the whole-pipeline flow: which stages of a pipeline run are already done (resume)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lune.data.store import Store


OUTPUTS_KEY = "pipeline_outputs"
SECONDS_KEY = "pipeline_seconds"


@dataclass(frozen=True)
class CompletedStage:
    """A stage run that completed: what it handed to the next stage, and how long it took then."""

    outputs: dict[str, Any]
    seconds: float | None  # None for runs recorded before the pipeline kept their time


def completed_stage(store: Store, stage_run_id: str) -> CompletedStage | None:
    """The completed stage run ``stage_run_id``, or None if it has not completed."""
    rows = store.query("SELECT status, artefacts FROM runs WHERE run_id = ?", [stage_run_id])
    if not rows or rows[0]["status"] != "completed":
        return None
    artefacts = json.loads(rows[0]["artefacts"] or "{}")
    if OUTPUTS_KEY not in artefacts:
        return None
    return CompletedStage(artefacts[OUTPUTS_KEY], artefacts.get(SECONDS_KEY))


def record_outputs(store: Store, stage_run_id: str, outputs: dict[str, Any], seconds: float) -> None:
    """Mark a stage run completed and keep its outputs and wall time beside the artefacts the stage
    recorded."""
    rows = store.query("SELECT artefacts FROM runs WHERE run_id = ?", [stage_run_id])
    artefacts = json.loads(rows[0]["artefacts"] or "{}") if rows else {}
    artefacts[OUTPUTS_KEY] = outputs
    artefacts[SECONDS_KEY] = round(seconds, 3)
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
