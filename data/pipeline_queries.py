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


def recorded(store: Store, stage_run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metrics and artefacts a stage's own flow recorded on its run (empty if none): the
    pipeline's lifecycle of the same row keeps them when it closes the row."""
    rows = store.query("SELECT metrics, artefacts FROM runs WHERE run_id = ?", [stage_run_id])
    if not rows:
        return {}, {}
    return json.loads(rows[0]["metrics"] or "{}"), json.loads(rows[0]["artefacts"] or "{}")


def outputs_artefacts(outputs: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What the pipeline adds to a completed stage's artefacts: the outputs it handed to the next
    stage (what a resume gets back, :func:`completed_stage`) and its wall time."""
    return {OUTPUTS_KEY: outputs, SECONDS_KEY: round(seconds, 3)}
