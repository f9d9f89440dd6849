"""The score stage as a Prefect flow: ``scores, embeddings, preview verdicts <- candidates``.

Wiring only; the work is ``generators.scorers``. One task per scorer, in the configured order
(quality after its inputs, duplicate after quality), then the preview verdicts of the curation
policy that the views show:

    score_candidates("lune.duckdb", ScoreConfig(), CurateConfig())
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from lune.generators.config import CurateConfig, ScoreConfig


def _score_config(config: dict[str, Any] | ScoreConfig | None) -> ScoreConfig:
    return config if isinstance(config, ScoreConfig) else ScoreConfig.model_validate(config or {})


def _curate_config(config: dict[str, Any] | CurateConfig | None) -> CurateConfig:
    return config if isinstance(config, CurateConfig) else CurateConfig.model_validate(config or {})


@task(name="start-score-run")
def start_run(db: str, score: dict[str, Any], curate: dict[str, Any], run_id: str | None,
              parent_run_id: str | None) -> str:
    from lune.data.store import Store

    with Store.open(db) as store:
        return store.start_run("score", {"score": score, "curate": curate}, run_id=run_id, parent_run_id=parent_run_id)


@task(name="score")
def score_with(db: str, name: str, score: dict[str, Any], run_id: str) -> int:
    """Run one scorer over what it has not scored yet; return the rows written."""
    from lune.data.store import Store
    from lune.generators.scorers import run_scorer

    with Store.open(db) as store:
        return run_scorer(store, name, ScoreConfig.model_validate(score), run_id=run_id)


@task(name="preview-verdicts")
def preview_verdicts(db: str, score: dict[str, Any], curate: dict[str, Any]) -> dict[str, Any]:
    from lune.data.store import Store
    from lune.generators.curation import preview

    with Store.open(db) as store:
        counts = preview(store, CurateConfig.model_validate(curate), ScoreConfig.model_validate(score))
    return {"kept": counts["kept"], "dropped": counts["dropped"], "facts": counts["facts"],
            "below_minimum": len(counts["below_minimum"])}


@task(name="finish-score-run")
def finish_run(db: str, run_id: str, metrics: dict[str, Any]) -> None:
    from lune.data.store import Store

    with Store.open(db) as store:
        store.finish_run(run_id, metrics=metrics)


@flow(name="score_candidates")
def score_candidates(db: str, config: dict[str, Any] | ScoreConfig | None = None,
                     curate: dict[str, Any] | CurateConfig | None = None, run_id: str | None = None,
                     parent_run_id: str | None = None) -> dict[str, Any]:
    """Score every candidate of ``db`` not yet scored; return rows written per scorer and the preview."""
    from lune.generators.scorers import contradiction_status

    score_cfg, curate_cfg = _score_config(config), _curate_config(curate)
    score, cur = score_cfg.model_dump(), curate_cfg.model_dump()
    run_id = start_run(str(db), score, cur, run_id, parent_run_id)
    written = {name: score_with.with_options(name=f"score-{name}")(str(db), name, score, run_id)
               for name in score_cfg.scorers}
    metrics = {"written": written, "contradiction": contradiction_status(score_cfg),
               "preview": preview_verdicts(str(db), score, cur)}
    finish_run(str(db), run_id, metrics)
    return {"run_id": run_id, **metrics}
