"""Scorers: each judges candidates on one axis and writes ``scores`` rows (candidate, scorer,
version, value, detail), skipping what is already scored under the same version.

    >>> from generators.scorers import run_scorers
    >>> with Store.open("lune.duckdb") as store:
    ...     counts = run_scorers(store, ScoreConfig())   # {"similarity": 1200, "answer_leak": 1200, ...}

Order matters: ``quality`` reads similarity, answer_leak, fluency and contradiction; ``duplicate``
keeps the best of near-identical candidates by quality. See docs/scoring.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from lune.data.errors import LuneError
from lune.data.store import Store
from lune.generators.config import ScoreConfig
from lune.generators.scorers.contradiction import contradiction_status

SCORER_NAMES: tuple[str, ...] = ("similarity", "answer_leak", "contradiction", "fluency", "quality", "duplicate")

__all__ = ["SCORER_NAMES", "contradiction_status", "run_scorer", "run_scorers", "scorer_version"]


def _module(name: str):
    if name not in SCORER_NAMES:
        raise LuneError(f"score.scorers: unknown scorer {name!r}; known: {', '.join(SCORER_NAMES)}")
    import importlib

    return importlib.import_module(f"lune.generators.scorers.{name}")


def scorer_version(name: str, config: ScoreConfig) -> str | None:
    """The version string ``name`` writes under ``config`` (None: the scorer is off)."""
    module = _module(name)
    return module.version(config) if hasattr(module, "version") else module.VERSION


def run_scorer(store: Store, name: str, config: ScoreConfig, *, run_id: str | None = None, **kwargs) -> int:
    """Run one scorer over every candidate it has not scored; return the rows written."""
    return int(_module(name).run(store, config, run_id=run_id, **kwargs))


def run_scorers(store: Store, config: ScoreConfig, *, run_id: str | None = None,
                progress: Callable[[str, int, float], None] | None = None) -> dict[str, int]:
    """Run the configured scorers in order, sharing one embedding model; {scorer: rows written}."""
    from lune.generators.scorers.embedding import Embedder

    embedder = Embedder(store, config.embedding_model, batch_size=config.batch_size)
    counts: dict[str, int] = {}
    for name in config.scorers:
        started = time.perf_counter()
        kwargs = {"embedder": embedder} if name in ("similarity", "duplicate") else {}
        counts[name] = run_scorer(store, name, config, run_id=run_id, **kwargs)
        if progress is not None:
            progress(name, counts[name], time.perf_counter() - started)
    return counts


def score_stage(store: Store, config: ScoreConfig, curate_config=None, *, run_id: str | None = None,
                parent_run_id: str | None = None, progress: Callable[[str, int, float], None] | None = None
                ) -> dict:
    """The score stage as one recorded run: every configured scorer, then the preview verdicts of the
    curation policy (what the views show until a set is saved). Returns counts and timings."""
    from lune.generators.config import CurateConfig
    from lune.generators.curation import preview

    curate_config = curate_config or CurateConfig()
    run_id = store.start_run("score", {"score": config.model_dump(), "curate": curate_config.model_dump()},
                             run_id=run_id, parent_run_id=parent_run_id)
    timings: dict[str, float] = {}

    def _progress(name: str, written: int, seconds: float) -> None:
        timings[name] = round(seconds, 3)
        if progress is not None:
            progress(name, written, seconds)

    try:
        written = run_scorers(store, config, run_id=run_id, progress=_progress)
        started = time.perf_counter()
        counts = preview(store, curate_config, config)
        timings["preview_verdicts"] = round(time.perf_counter() - started, 3)
    except BaseException as err:
        store.finish_run(run_id, status="failed", error=f"{type(err).__name__}: {err}")
        raise
    metrics = {"written": written, "seconds": timings, "contradiction": contradiction_status(config),
               "preview": {k: counts[k] for k in ("kept", "dropped", "facts")},
               "below_minimum": len(counts["below_minimum"])}
    store.finish_run(run_id, metrics=metrics)
    return {"run_id": run_id, **metrics}
