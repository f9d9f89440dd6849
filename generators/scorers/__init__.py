"""Scorers: each judges candidates on one axis and writes ``scores`` rows (candidate, scorer,
version, value, detail), skipping what is already scored under the same version.

    >>> from lune.generators.scorers import run_scorers
    >>> with Store.open("lune.duckdb") as store:
    ...     counts = run_scorers(store, ScoreConfig())   # {"similarity": 1200, "answer_leak": 1200, ...}

One module per scorer (a :class:`~generators.scorers.base.Scorer` subclass), found by the registry;
one runner (:mod:`generators.scorers.runner`) for all of them. Order matters: ``quality`` reads
similarity, answer_leak, fluency and contradiction; ``duplicate`` keeps the best of near-identical
candidates by quality. See docs/scoring.md.
"""

from __future__ import annotations

from lune.generators.scorers.base import Rejection, Score, Scorer, ScoringContext
from lune.generators.scorers.contradiction import contradiction_status
from lune.generators.scorers.registry import scorer_class, scorer_names, scorer_version
from lune.generators.scorers.runner import ScorerProgress, run, run_scorer, run_scorers
from lune.generators.scorers.stage import score_stage

__all__ = [
    "Rejection",
    "Score",
    "Scorer",
    "ScorerProgress",
    "ScoringContext",
    "contradiction_status",
    "run",
    "run_scorer",
    "run_scorers",
    "score_stage",
    "scorer_class",
    "scorer_names",
    "scorer_version",
]
