"""The score stage as a Prefect flow: ``scores, embeddings, preview verdicts <- candidates``.

Wiring only; the work and its ``runs`` row are ``generators.scorers.score_stage`` (every configured
scorer in order, quality after its inputs, duplicate after quality, then the preview verdicts of the
curation policy that the views show), the same call as `lune score`:

    score_candidates("lune.duckdb", ScoreConfig(), CurateConfig())
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from lune.generators.config import CurateConfig, ScoreConfig


@task(name="score")
def score_task(
    db: str, score: dict[str, Any], curate: dict[str, Any], run_id: str | None, parent_run_id: str | None
) -> dict[str, Any]:
    """Score every candidate not scored yet, then write the preview verdicts; return the run's metrics."""
    from lune.data.store import Store
    from lune.generators.scorers import ScorerProgress, score_stage

    logger = get_run_logger()

    def log(report: ScorerProgress) -> None:
        logger.info(
            "%s: %d of %d candidates, %d new scores, %.1f s%s",
            report.scorer,
            report.judged,
            report.pending,
            report.written,
            report.seconds,
            " (done)" if report.done else "",
        )

    with Store.open(db) as store:
        return score_stage(
            store,
            ScoreConfig.model_validate(score),
            CurateConfig.model_validate(curate),
            run_id=run_id,
            parent_run_id=parent_run_id,
            progress=log,
        )


@flow(name="score_candidates")
def score_candidates(
    db: str,
    config: dict[str, Any] | ScoreConfig | None = None,
    curate: dict[str, Any] | CurateConfig | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Score every candidate of ``db`` not yet scored; return rows written per scorer and the preview."""
    score = config if isinstance(config, ScoreConfig) else ScoreConfig.model_validate(config or {})
    cur = curate if isinstance(curate, CurateConfig) else CurateConfig.model_validate(curate or {})
    return score_task(str(db), score.model_dump(), cur.model_dump(), run_id, parent_run_id)
