"""The teach stage as a Prefect flow: ``taught model, retain model <- facts``.

Wiring only; the work is ``unlearn.teach.teach``. Passes paths and ids, never models:

    teach_flow("lune.duckdb", "runs/default")   # -> {"model_dir": ..., "retain_model_dir": ..., "run_id": ...}
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from lune.core.threads import torch_threads
from lune.unlearn.config import TeachConfig


@task(name="teach-facts", cache_policy=NONE)
def load_teach_facts(db: str, corpus: str | None) -> list[dict[str, Any]]:
    """The facts to teach (forget, retain and utility splits) from the store."""
    from lune.data.store import Store
    from lune.data.unlearn_queries import teach_facts

    with Store.open(db) as store:
        return teach_facts(store, corpus)


@task(name="teach-models", cache_policy=NONE)
def teach_models(
    db: str,
    facts: list[dict[str, Any]],
    workdir: str,
    config: dict[str, Any],
    run_id: str | None,
    parent_run_id: str | None,
    progress: bool,
) -> dict[str, Any]:
    """Teach the model and the retain model (or return the cached ones); record the run."""
    from lune.data.store import Store
    from lune.unlearn.teach import teach

    with torch_threads(), Store.open(db) as store:  # threads sized to the cores this process may use
        result = teach(
            facts,
            workdir,
            TeachConfig.model_validate(config),
            store=store,
            run_id=run_id,
            parent_run_id=parent_run_id,
            progress=progress,
        )
    return result.as_dict()


@flow(name="teach", log_prints=True)
def teach_flow(
    db: str,
    workdir: str,
    config: dict[str, Any] | TeachConfig | None = None,
    *,
    corpus: str | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Teach the store's facts; return ``model_dir``, ``retain_model_dir``, ``cached``, ``run_id``,
    ``metrics`` and ``warnings`` (plain data)."""
    settings = config if isinstance(config, TeachConfig) else TeachConfig.model_validate(config or {})
    facts = load_teach_facts(str(db), corpus)
    result = teach_models(
        str(db), facts, str(workdir), settings.model_dump(mode="json"), run_id, parent_run_id, progress
    )
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    return result
