"""The one loop every scorer runs in: pending candidates -> ``score`` -> ``scores`` rows, batch by batch.

Each batch is written as soon as it is scored (and each batch of new embeddings as soon as it is
encoded, see :mod:`generators.scorers.embedding`), so a killed run keeps what it finished and a rerun
picks up the candidates still pending: they are read through an anti-join on (scorer, version).

    >>> with Store.open("lune.duckdb") as store:
    ...     counts = run_scorers(store, ScoreConfig())   # {"similarity": 1200, "answer_leak": 1200, ...}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lune.data.scoring_queries import count_pending, pending_candidates, write_scores
from lune.data.store import Store
from lune.generators.config import ScoreConfig
from lune.generators.scorers.base import Scorer, ScoringContext
from lune.generators.scorers.registry import scorer_class


@dataclass(frozen=True)
class ScorerProgress:
    """Where one scorer stands: after each written batch, and once more (``done``) at its end."""

    scorer: str
    judged: int  # pending candidates handed to the scorer so far
    pending: int  # candidates pending when it started
    written: int  # new ``scores`` rows so far
    seconds: float
    done: bool


Progress = Callable[[ScorerProgress], None]


def run(scorer: Scorer, *, run_id: str | None = None, progress: Progress | None = None) -> int:
    """Score every candidate ``scorer`` has not scored under its current version; return the rows written."""
    store, started = scorer.context.store, time.perf_counter()
    version = scorer.version(scorer.config)
    if version is None:  # off under this config: no work, no rows
        pending, judged, written = 0, 0, 0
    else:
        pending = count_pending(store, scorer.name, version, kinds=scorer.kinds)
        judged = written = 0
        loaded = False
        for chunk in pending_candidates(
            store, scorer.name, version, kinds=scorer.kinds, chunk_size=scorer.chunk_size()
        ):
            if not loaded:
                scorer.load()
                loaded = True
            scores = scorer.score(chunk)
            rejected = [
                {
                    "run_id": run_id,
                    "stage": "score",
                    "location": s.candidate_id,
                    "source": s.rejection.source,
                    "field": s.rejection.field,
                    "reason": s.rejection.reason,
                    "payload": s.rejection.payload,
                }
                for s in scores
                if s.rejection is not None
            ]
            if rejected:
                store.reject(rejected)
            written += write_scores(
                store,
                [
                    {
                        "candidate_id": s.candidate_id,
                        "scorer": scorer.name,
                        "scorer_version": version,
                        "value": s.value,
                        "detail": s.detail,
                        "run_id": run_id,
                    }
                    for s in scores
                ],
            )
            judged += len(chunk)
            if progress is not None:
                progress(ScorerProgress(scorer.name, judged, pending, written, time.perf_counter() - started, False))
    if progress is not None:
        progress(ScorerProgress(scorer.name, judged, pending, written, time.perf_counter() - started, True))
    return written


def run_scorer(
    store: Store,
    name: str,
    config: ScoreConfig,
    *,
    run_id: str | None = None,
    context: ScoringContext | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> int:
    """Run the scorer ``name`` (``options`` go to its constructor, e.g. a judge); return the rows written."""
    scorer = scorer_class(name)(context or ScoringContext(store, config), **options)
    return run(scorer, run_id=run_id, progress=progress)


def run_scorers(
    store: Store, config: ScoreConfig, *, run_id: str | None = None, progress: Progress | None = None
) -> dict[str, int]:
    """Run the configured scorers in order, sharing one embedding model; {scorer: rows written}."""
    context = ScoringContext(store, config)
    return {
        name: run_scorer(store, name, config, run_id=run_id, context=context, progress=progress)
        for name in config.scorers
    }
