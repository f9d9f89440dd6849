"""The unlearn stage as a Prefect flow: ``adapter + manifest <- curated set, model``.

Wiring only; the work is ``unlearn.run.unlearn``. Passes paths and ids, never models:

    unlearn_flow("lune.duckdb", "runs/default/models/teach-.../taught", "runs/default/adapters/lune",
                 set_name="tofu-forget01", config={"method": "lune", "retain_anchor": "kl"})
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from lune.core.threads import torch_threads
from lune.data.errors import LuneError
from lune.unlearn.config import UnlearnConfig


@task(name="unlearn-inputs", cache_policy=NONE)
def load_inputs(db: str, set_name: str | None, version: int | None, dataset: str | None) -> dict[str, Any]:
    """The curated set's rows (from the store, or a ``lune export`` folder) and the retain facts of
    the same corpora from the store."""
    from lune.data.store import Store
    from lune.data.unlearn_queries import corpus_of_facts, retain_facts
    from lune.unlearn.inputs import load_curated

    with Store.open(db) as store:
        if dataset:
            rows, set_id, source = load_curated(dataset)
        else:
            from lune.data.export import curated_rows, resolve_set

            set_id = resolve_set(store, set_name, version)
            rows, source = curated_rows(store, set_id), f"curated set {set_name}"
        forget_ids = [f["fact_id"] for f in rows.get("forget", [])]
        corpora = corpus_of_facts(store, forget_ids)
        retain = [r for corpus in (corpora or [None]) for r in retain_facts(store, forget_ids, corpus)]
    return {"rows": rows, "set_id": set_id, "source": source, "retain": retain}


@task(name="unlearn-train", cache_policy=NONE)
def train(
    db: str,
    model: str,
    inputs: dict[str, Any],
    out_dir: str,
    config: dict[str, Any],
    run_id: str | None,
    parent_run_id: str | None,
    progress: bool,
) -> dict[str, Any]:
    """Train the method, write the adapter (or model) and its manifest, record the run."""
    from lune.data.store import Store
    from lune.unlearn.inputs import build_data
    from lune.unlearn.run import unlearn

    data = build_data(inputs["rows"], inputs["retain"], set_id=inputs["set_id"])
    data.source = inputs["source"]
    with torch_threads(), Store.open(db) as store:  # threads sized to the cores this process may use
        result = unlearn(
            model,
            data,
            out_dir,
            UnlearnConfig.model_validate(config),
            store=store,
            run_id=run_id,
            parent_run_id=parent_run_id,
            progress=progress,
        )
    return result.as_dict()


@flow(name="unlearn", log_prints=True)
def unlearn_flow(
    db: str,
    model: str,
    out_dir: str,
    *,
    set_name: str | None = None,
    version: int | None = None,
    dataset: str | None = None,
    config: dict[str, Any] | UnlearnConfig | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Unlearn a curated set (``set_name`` in the store, or an export folder ``dataset``) from ``model``.

    Returns ``out_dir``, ``adapter_dir`` (None for full_ft), ``manifest``, ``merged_dir``, ``method``,
    ``run_id`` and ``metrics`` (plain data).
    """
    if bool(set_name) == bool(dataset):
        raise LuneError("give exactly one of a curated set name (--set) or an export folder (--dataset)")
    settings = config if isinstance(config, UnlearnConfig) else UnlearnConfig.model_validate(config or {})
    inputs = load_inputs(str(db), set_name, version, dataset)
    return train(
        str(db), str(model), inputs, str(out_dir), settings.model_dump(mode="json"), run_id, parent_run_id, progress
    )
