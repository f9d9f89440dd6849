"""The evaluate flow: probes -> answers and likelihoods -> metrics -> store -> report, each step a
Prefect task; the report is published as Prefect artifacts (the Markdown report and the headline
table). Wiring only: the logic is ``evaluation.evaluate.evaluate_models``.

    >>> evaluate_flow(db="lune.duckdb", model="runs/x/taught", adapters={"lune": "runs/x/adapter"})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from lune.data.store import Store
from lune.evaluation.config import EvaluateConfig
from lune.evaluation.evaluate import EvaluationOutcome, evaluate_models
from lune.flows.attacks import relearn


def run_as_task(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run one step of the stage as a Prefect task named ``name`` (no caching: steps take a store
    and models, and their results live in the store)."""
    return task(fn, name=name, cache_policy=NONE)(*args, **kwargs)


def publish_report(outcome: EvaluationOutcome) -> None:
    """The report as Prefect artifacts: the Markdown file and the headline table."""
    markdown = Path(outcome.report_files["report_md"]).read_text(encoding="utf-8")
    create_markdown_artifact(
        markdown=markdown, key="evaluation-report", description=f"lune evaluation report, run {outcome.run_id}"
    )
    rows = [
        {"model": label, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in values.items()}}
        for label, values in outcome.headline.items()
    ]
    if rows:
        create_table_artifact(
            table=rows, key="evaluation-headline", description=f"headline metrics per model, run {outcome.run_id}"
        )


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    db: str,
    model: str,
    adapters: Mapping[str, str] | None = None,
    *,
    retain_model: str | None = None,
    set_name: str | None = None,
    out_dir: str = "runs/evaluate",
    run_id: str | None = None,
    parent_run_id: str | None = None,
    config: dict[str, Any] | None = None,
) -> EvaluationOutcome:
    """Evaluate ``model`` and each of ``adapters`` (label -> adapter or model directory) on the same
    probes; store the results and write and publish the report."""
    settings = EvaluateConfig.model_validate(config or {})
    from lune.core.threads import torch_threads

    with torch_threads(), Store.open(db) as store:  # threads sized to the cores this process may use
        outcome = evaluate_models(
            store,
            model,
            dict(adapters or {}),
            retain_model=retain_model,
            set_id=set_name,
            out_dir=out_dir,
            run_id=run_id,
            parent_run_id=parent_run_id,
            config=settings,
            step=run_as_task,
            finetune=relearn,
        )
    publish_report(outcome)
    return outcome
