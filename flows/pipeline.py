"""The whole pipeline as one Prefect flow, each stage a subflow, in the order of the diagram:

    ingest -> [select] -> generate -> score -> curate (+ export) -> teach -> unlearn (per method) -> evaluate

``select`` runs when the config asks for the knowledge probe or caps facts (``flows/select.py``).

One pipeline run id ties every row and artefact together: each stage runs under a stage run id
derived from it (``runs.parent_run_id`` is the pipeline run). The pipeline run id itself is a hash
of the resolved config and the store path, so running the same config again *resumes* it: stages
whose run is recorded as completed hand over their stored outputs and are not run again; the first
one that is not completed runs, and so on. A run that completed replays its results at once.

Wiring only: every stage's work is in its own flow (``flows/<stage>.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow

from lune.core.progress import announce
from lune.data import pipeline_queries
from lune.data.ids import content_id
from lune.data.store import Store
from lune.flows.config import PipelineConfig


def pipeline_run_id(config: PipelineConfig, db: str) -> str:
    """Same resolved config and store, same pipeline run (what makes a rerun resume)."""
    settings = config.model_dump(mode="json")
    for name in ("probe", "select"):  # sections added later: at their defaults they leave earlier run ids alone
        if settings.get(name) == type(getattr(config, name))().model_dump(mode="json"):
            settings.pop(name)
    return content_id("pipeline", settings, str(Path(db).resolve()))[:16]


def stage_run_id(pipeline_id: str, stage: str, label: str = "") -> str:
    return content_id("stage", pipeline_id, stage, label)[:16]


class StageRunner:
    """Runs each stage once per pipeline run: a completed stage hands back its stored outputs.

    A stage runs under its own ``runs`` row (``store.run``), which the stage's flow fills with its
    metrics and artefacts; the pipeline adds the outputs it handed on and the wall time.
    ``timings`` holds each stage's wall time, for a reused stage the time it took when it ran;
    ``reused`` names the stages this invocation did not run again."""

    def __init__(self, store: Store, pipeline_id: str, say: Callable[[str], None]):
        self.store, self.pipeline_id, self.say = store, pipeline_id, say
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []

    def __call__(
        self,
        stage: str,
        work: Callable[[str], dict[str, Any]],
        *,
        label: str = "",
        config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        name = f"{stage}:{label}" if label else stage
        run_id = stage_run_id(self.pipeline_id, stage, label)
        done = pipeline_queries.completed_stage(self.store, run_id)
        if done is not None:
            self.say(f"[{name}] already completed in this pipeline run; reusing its outputs")
            self.timings[name] = done.seconds or 0.0
            self.reused.append(name)
            return done.outputs
        with self.store.run(stage, config or {}, run_id=run_id, parent_run_id=self.pipeline_id) as run:
            self.say(f"[{name}] started")
            started = time.perf_counter()
            try:
                outputs = work(run_id)
            finally:  # the stage's flow recorded its own metrics and artefacts on this row: keep them
                run.metrics, run.artefacts = pipeline_queries.recorded(self.store, run_id)
            self.timings[name] = time.perf_counter() - started
            outputs = json.loads(json.dumps(outputs, default=str))  # what is stored is what a resume gets back
            run.artefacts.update(pipeline_queries.outputs_artefacts(outputs, self.timings[name]))
        self.say(f"[{name}] done in {self.timings[name]:.1f} s")
        return outputs


def _dump(section: Any) -> dict[str, Any]:
    return section.model_dump(mode="json")


def pipeline_corpora(config: PipelineConfig) -> list[str]:
    """The corpus names the config's ingest sources write (a source's ``corpus``, else its format or
    benchmark name): the facts the select step may set aside."""
    names = []
    for source in config.ingest.sources:
        default = source.benchmark.partition(":")[0].strip() if source.benchmark else source.format
        names.append(source.corpus or default)
    return sorted({n for n in names if n})


def selects(config: PipelineConfig) -> bool:
    """Whether the config runs the select step (the knowledge probe, or caps on the facts)."""
    return bool(config.probe.enabled or config.select.max_facts)


def select_stage(
    stage: StageRunner, store: Store, db: str, config: PipelineConfig, parent_run_id: str | None = None
) -> None:
    """The select step, before generation: the facts the model does not answer, and those over the
    caps, are set aside. Without probe or caps, facts an earlier selection set aside on these
    corpora are put back in their splits (that selection no longer applies)."""
    if selects(config):
        from lune.flows.select import select_facts

        stage(
            "select",
            lambda rid: select_facts(
                db,
                pipeline_corpora(config),
                select=config.select,
                probe=config.probe,
                model=config.model,
                run_id=rid,
                parent_run_id=parent_run_id,
            ),
            config={"probe": _dump(config.probe), "select": _dump(config.select)},
        )
    else:
        from lune.data.fact_selection import restore_set_aside

        restored = restore_set_aside(store, pipeline_corpora(config))
        if restored:
            stage.say(f"[select] {restored} facts an earlier selection set aside are back in their splits")


@flow(name="lune-pipeline")
def pipeline(
    db: str, config: PipelineConfig, methods: list[str] | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """Run (or resume) every stage of ``config`` on the store ``db``.

    ``methods``: unlearning methods to run on the same curated set and compare in one report
    (default: ``config.unlearn.method`` alone). Returns the pipeline run id, the report files, the
    headline metrics per model, and the wall time of each stage.
    """
    from lune.data.export import export_set
    from lune.evaluation.report import rendered_report
    from lune.flows.curate import curate_set
    from lune.flows.evaluate import evaluate_flow
    from lune.flows.generate import build_negatives
    from lune.flows.ingest import ingest_flow
    from lune.flows.score import score_candidates
    from lune.flows.teach import teach_flow
    from lune.flows.unlearn import unlearn_flow

    db = str(db)
    methods = list(methods or [config.unlearn.method])
    pid = run_id or pipeline_run_id(config, db)
    workdir = Path(config.workdir)
    started = time.perf_counter()
    # One connection for the whole run: each stage's flow opens its own beside it (same process).
    with Store.open(db) as store, store.run("pipeline", {**_dump(config), "methods": methods}, run_id=pid) as run:
        stage = StageRunner(store, pid, announce)
        stage(
            "ingest",
            lambda rid: ingest_flow(db, config.ingest, run_id=rid, parent_run_id=pid),
            config=_dump(config.ingest),
        )
        select_stage(stage, store, db, config, parent_run_id=pid)
        stage(
            "generate",
            lambda rid: build_negatives(db, config.generate, run_id=rid, parent_run_id=pid),
            config=_dump(config.generate),
        )
        stage(
            "score",
            lambda rid: score_candidates(db, config.score, config.curate, run_id=rid, parent_run_id=pid),
            config=_dump(config.score),
        )
        curated = stage(
            "curate",
            lambda rid: curate_set(db, config.curate, config.score, run_id=rid, parent_run_id=pid),
            config=_dump(config.curate),
        )
        set_id = curated["set_id"]
        stage("export", lambda _: export_set(store, set_id, workdir / "curated" / set_id))
        if config.teach.enabled:
            taught = stage(
                "teach",
                lambda rid: teach_flow(db, str(workdir), config.teach, run_id=rid, parent_run_id=pid),
                config=_dump(config.teach),
            )
            model_dir, retain_dir = taught["model_dir"], taught.get("retain_model_dir")
        else:
            model_dir, retain_dir = config.model, config.evaluate.retain_model
            if not model_dir:
                from lune.data.errors import LuneError

                raise LuneError("teach.enabled is false, so the config's `model` must name the model to unlearn")
        adapters: dict[str, str] = {}
        for method in methods:
            settings = _dump(config.unlearn.for_method(method))  # its per_method settings applied
            out = stage(
                "unlearn",
                lambda rid, settings=settings, method=method: unlearn_flow(
                    db,
                    model_dir,
                    str(workdir / "unlearned" / method),
                    set_name=set_id,
                    config=settings,
                    run_id=rid,
                    parent_run_id=pid,
                ),
                label=method,
                config=settings,
            )
            adapters[method] = out.get("adapter_dir") or out["out_dir"]

        # Another method list is another evaluation (the same pipeline run otherwise: a comparison
        # after `lune run` reuses its taught models and its LUNE adapter), with its own report folder
        # (`report-lune+npo/`), so that neither overwrites the other.
        compared = "" if methods == [config.unlearn.method] else "+".join(methods)
        report_dir = workdir / (f"report-{compared}" if compared else "report")

        def evaluate(rid: str) -> dict[str, Any]:
            outcome = evaluate_flow(
                db,
                model_dir,
                adapters,
                retain_model=retain_dir,
                set_name=set_id,
                out_dir=str(report_dir),
                run_id=rid,
                parent_run_id=pid,
                config=_dump(config.evaluate),
            )
            return {
                "run_id": outcome.run_id,
                "out_dir": str(outcome.out_dir),
                "report_files": outcome.report_files,
                "headline": outcome.headline,
                "notes": outcome.notes,
            }

        evaluated = stage("evaluate", evaluate, label=compared, config=_dump(config.evaluate))
        if stage.reused and stage.reused[-1].startswith("evaluate"):
            # A replay shows its own evaluation, whatever happened to the folder since it ran.
            evaluated["report_files"] = rendered_report(
                store, evaluated["run_id"], evaluated["out_dir"], evaluated["report_files"], plots=config.evaluate.plots
            )
        summary = {
            "pipeline_run_id": pid,
            "set_id": set_id,
            "model_dir": model_dir,
            "retain_model_dir": retain_dir,
            "adapters": adapters,
            "methods": methods,
            "evaluation": evaluated,
            "stage_seconds": stage.timings,
            "reused_stages": stage.reused,
            "wall_seconds": time.perf_counter() - started,
        }
        run.metrics["stage_seconds"] = stage.timings
        run.artefacts.update(summary)
    return summary
