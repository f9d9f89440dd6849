"""The score stage as one recorded run: every configured scorer, then the preview verdicts of the
curation policy (what the views show until a set is saved). `lune score` and the Prefect flow
``flows.score.score_candidates`` both run this.

    >>> with Store.open("lune.duckdb") as store:
    ...     result = score_stage(store, ScoreConfig(), CurateConfig())   # result["written"]["similarity"], ...
"""

from __future__ import annotations

import time
from typing import Any

from lune.data.store import Store
from lune.generators.config import CurateConfig, ScoreConfig
from lune.generators.scorers.contradiction import contradiction_status
from lune.generators.scorers.runner import Progress, ScorerProgress, run_scorers


def score_stage(
    store: Store,
    config: ScoreConfig,
    curate_config: CurateConfig | None = None,
    *,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Score, then decide the preview verdicts, under one ``runs`` row (kind ``score``); returns the
    run id and the run's metrics: rows written and seconds per scorer, the preview's counts."""
    from lune.generators.curation import preview

    curate_config = curate_config or CurateConfig()
    settings = {"score": config.model_dump(), "curate": curate_config.model_dump()}
    with store.run("score", settings, run_id=run_id, parent_run_id=parent_run_id) as run:
        timings: dict[str, float] = {}

        def _progress(report: ScorerProgress) -> None:
            if report.done:
                timings[report.scorer] = round(report.seconds, 3)
            if progress is not None:
                progress(report)

        written = run_scorers(store, config, run_id=run.run_id, progress=_progress)
        started = time.perf_counter()
        counts = preview(store, curate_config, config)
        timings["preview_verdicts"] = round(time.perf_counter() - started, 3)
        run.metrics.update(
            {
                "written": written,
                "seconds": timings,
                "contradiction": contradiction_status(config),
                "preview": {k: counts[k] for k in ("kept", "dropped", "facts")},
                "below_minimum": len(counts["below_minimum"]),
            }
        )
    return {"run_id": run.run_id, **run.metrics}
