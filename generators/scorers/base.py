"""The scorer protocol: what one scorer is, and what it shares with the others of a run.

A scorer judges candidates on one axis and knows nothing of resumption or writing (the shape of
datatrove's ``BaseFilter``): it names itself, says which version of its judgement a config asks for,
loads what it needs when there is work, and maps a batch of candidate rows to :class:`Score` values.
The shared runner (:mod:`generators.scorers.runner`) selects the pending candidates, calls it batch
by batch, writes the rows and reports progress. A new scorer is one module in this package holding
one subclass with a ``name``; the registry finds it (:mod:`generators.scorers.registry`).

    class Shouting(Scorer):
        name = "shouting"

        @classmethod
        def version(cls, config):
            return "1"

        def score(self, rows):
            return [Score(r["candidate_id"], float(r["text"].isupper()), {}) for r in rows]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from lune.data.store import Store
from lune.generators.config import ScoreConfig
from lune.generators.scorers.embedding import Embedder


@dataclass(frozen=True)
class Rejection:
    """Why a score has no value, for the ``rejections`` table (stage ``score``, location: the candidate)."""

    source: str
    field: str
    reason: str
    payload: str


@dataclass(frozen=True)
class Score:
    """One scorer's judgement of one candidate: its value (None: no value, say why in ``rejection``)
    and the detail stored beside it (JSON)."""

    candidate_id: str
    value: float | None
    detail: dict[str, Any] = field(default_factory=dict)
    rejection: Rejection | None = None


@dataclass
class ScoringContext:
    """What the scorers of one run share: the store (to read inputs such as other scores), the
    config, and one embedding model (loaded on the first text not in the cache)."""

    store: Store
    config: ScoreConfig

    @cached_property
    def embedder(self) -> Embedder:
        return Embedder(self.store, self.config.embedding_model, batch_size=self.config.batch_size)


class Scorer(ABC):
    """One axis of judgement. Subclasses set ``name`` (stored in ``scores.scorer``) and implement
    :meth:`version` and :meth:`score`; ``kinds`` limits the candidate kinds judged (None: all)."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, context: ScoringContext) -> None:
        self.context = context
        self.config = context.config

    @classmethod
    @abstractmethod
    def version(cls, config: ScoreConfig) -> str | None:
        """The version this config asks for (a model or setting that changes values changes it);
        None when the scorer is off under this config."""

    def chunk_size(self) -> int:
        """Candidates read, scored and written together: the unit a killed run loses at most."""
        return self.config.chunk_size

    def load(self) -> None:  # noqa: B027 - most scorers need nothing loaded
        """Load what :meth:`score` needs (a model, a judge); called once, and only when there is work."""

    @abstractmethod
    def score(self, rows: list[dict[str, Any]]) -> list[Score]:
        """Judge a batch of pending candidate rows (candidate and fact columns, see
        ``data.scoring_queries.pending_candidates``). A row left out stays pending (its inputs are
        not scored yet); a scorer may also return scores of other candidates it had to decide with
        these (``duplicate`` decides whole groups)."""
