"""The evaluate stage: ask the base model and every unlearned model the same probes, score them,
store the results and write the report.

    >>> outcome = evaluate_models(store, "runs/x/taught", {"lune": "runs/x/adapter"},
    ...                           retain_model="runs/x/retain", set_id="default", out_dir="runs/x/eval")
    >>> outcome.headline["lune"]["usr"]

Steps (each a function, each a Prefect task in ``flows/evaluate.py``):

1. :func:`lune.evaluation.probes.load_probe_suite`: the probe sets, MIA texts and TOFU items;
2. and 3. :func:`lune.evaluation.inference.evaluate_specs`: greedy answers of every model to every
   probe (transformers, or vLLM with each adapter as a LoRA request), and log-likelihoods (MIA
   scores, TOFU truth ratios) under every model, and under the retain model for forget quality;
4. :func:`lune.evaluation.metrics.registry.compute_results`: every registered metric family
   (``evaluation/metrics/``) as ``eval_results`` rows and ``eval_items`` rows; then
   :func:`lune.evaluation.attacks.registry.run_attacks`: the attacks of ``config.attacks``
   (``evaluation/attacks/``) on the same models and the retain model, as more ``eval_results`` rows;
5. :func:`store_results`, then :func:`lune.evaluation.report.render_run`, which reads the finished
   run back from the store, so the report shows exactly what is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lune.core.models import model_specs
from lune.data import evaluation_queries as q
from lune.data.errors import LuneError
from lune.data.store import Store
from lune.evaluation.attacks.registry import run_attacks
from lune.evaluation.config import EvaluateConfig
from lune.evaluation.inference import evaluate_specs, generation_backend
from lune.evaluation.metrics.registry import Row, compute_results
from lune.evaluation.probes import load_probe_suite


@dataclass
class EvaluationOutcome:
    """What ``evaluate_models`` returns: the run, where the report is, and the headline numbers
    per model label (``usr``, ``apr``, ``gur``, ``mia_auc_loss``, ...)."""

    run_id: str
    out_dir: Path
    report_files: dict[str, str]
    headline: dict[str, dict[str, float | None]]
    counts: dict[str, int]
    notes: list[str]


# -- step 5: storing, and the whole stage ------------------------------------------------------


def store_results(store: Store, results: Sequence[Row], items: Sequence[Row]) -> tuple[int, int]:
    """Write the ``eval_results`` and ``eval_items`` rows (a rerun of the same run replaces them)."""
    return q.write_results(store, results, items)


def resolve_set_id(store: Store, set_name: str | None) -> str | None:
    """A curated set's id from its name or id; the latest set when None; None when the store has none."""
    if set_name:
        from lune.data.export import resolve_set

        return resolve_set(store, set_name)
    latest = q.latest_set(store)
    return latest["set_id"] if latest else None


StepRunner = Callable[..., Any]


def run_directly(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """The default step runner: call the step. ``flows/evaluate.py`` passes one that runs each step
    as a Prefect task of that name."""
    del name
    return fn(*args, **kwargs)


def evaluate_models(
    store: Store,
    base_model: str | Path,
    adapters: Mapping[str, str | Path | None],
    *,
    retain_model: str | Path | None = None,
    set_id: str | None = None,
    out_dir: str | Path = "runs/evaluate",
    run_id: str | None = None,
    parent_run_id: str | None = None,
    config: EvaluateConfig | None = None,
    step: StepRunner = run_directly,
    finetune: Callable[..., None] | None = None,
) -> EvaluationOutcome:
    """Evaluate the base model and every unlearned model on the same probes, store the results
    (``eval_results``, ``eval_items``, a ``runs`` row of kind ``evaluate``) and write the report
    (``report.md``, ``report.json``, PNG plots) into ``out_dir``.

    ``adapters``: label -> PEFT adapter directory (or full model directory) of each unlearned model
    (the labels name the rows and the report's columns, e.g. ``{"lune": ..., "npo": ...}``); an
    empty mapping evaluates the base model alone.
    ``set_id``: a curated set name or id (default ``config.set``, else the latest set; no set: all
    forget facts and the dataset's probes only).
    ``retain_model``: a model taught without the forget facts, for TOFU forget quality (default
    ``config.retain_model``).
    ``finetune``: the training the relearning attack fine-tunes with (``flows.attacks.relearn``;
    evaluation does not train), needed when ``config.attacks`` names ``relearning``.
    ``run_id`` / ``parent_run_id``: the ``runs`` row to write (a pipeline passes its ids); it is
    ``completed`` once the results are stored (artefact: ``out_dir``), ``failed`` if any step before
    fails.
    """
    from lune.evaluation.report import headline, render_run

    config = config or EvaluateConfig()
    retain_model = retain_model if retain_model is not None else config.retain_model
    specs = model_specs(base_model, {k: (str(v) if v is not None else None) for k, v in adapters.items()})
    chosen = resolve_set_id(store, set_id or config.set)
    resolved = {
        "evaluate": config.model_dump(),
        "base_model": str(base_model),
        "adapters": {k: str(v) for k, v in adapters.items() if v is not None},
        "retain_model": str(retain_model) if retain_model else None,
        "out_dir": str(out_dir),
        "set_id": chosen,
        # generation_backend: GRUN's interventions go through transformers whatever config.backend says
        "models": [{**spec.__dict__, "generation_backend": generation_backend(spec, config)} for spec in specs],
    }
    with store.run("evaluate", resolved, run_id=run_id, parent_run_id=parent_run_id) as run:
        suite = step(
            "load-probes",
            load_probe_suite,
            store,
            chosen,
            max_per_set=config.max_per_set,
            include_dataset_probes=config.include_dataset_probes,
            mia=config.mia,
            tofu=config.tofu,
            mia_nonmembers=config.mia_nonmembers,
            retain_probes=config.retain_probes,
        )
        if not suite.all_probes():
            raise LuneError(
                f"{store.path}: no probes to evaluate (no forget, retain or utility facts); run `lune ingest` first"
            )
        retain_dir = str(retain_model) if retain_model else None
        outputs, retain = step("answer-and-score", evaluate_specs, suite, specs, config, retain_dir)
        results, items = step("compute-metrics", compute_results, run.run_id, suite, outputs, retain, config)
        if config.attacks:
            results += step(
                "run-attacks", run_attacks, run.run_id, suite, outputs, retain, config, retain_dir, finetune
            )
        step("store-results", store_results, store, results, items)
        timings = {out.spec.label: out.seconds for out in outputs}
        n_probes = len(suite.all_probes())
        run.metrics.update(
            counts=suite.counts(),
            seconds=timings,
            notes=suite.notes,
            probes=n_probes,
            probes_per_second={label: n_probes / t["generate"] for label, t in timings.items() if t.get("generate")},
        )
        run.artefacts["out_dir"] = str(out_dir)
    # The report is rendered from the finished run (its status, counts and notes are in the report),
    # so after the block; `lune report --run ID` renders it again from the store alone.
    files = step("write-report", render_run, store, run.run_id, out_dir, plots=config.plots)
    return EvaluationOutcome(run.run_id, Path(out_dir), files, headline(results), suite.counts(), suite.notes)
