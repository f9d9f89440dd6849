"""`similarity`: cosine of a candidate and its fact, with a cached sentence-transformers model.

A negative or a refusal is compared with the fact's answer (a valid negative is on the answer's
topic without restating it); a paraphrase or an attack with the fact's question (it must keep the
question's meaning).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lune.data.scoring_queries import pending_candidates, write_scores
from lune.data.store import Store
from lune.generators.config import ScoreConfig
from lune.generators.scorers.embedding import Embedder, model_key

NAME = "similarity"
ANSWER_KINDS = frozenset({"negative", "refusal"})


def version(config: ScoreConfig) -> str:
    return f"1:{model_key(config.embedding_model)}"


def reference(row: dict[str, Any]) -> tuple[str, str]:
    """(what the candidate is compared with, its text)."""
    if row["kind"] in ANSWER_KINDS:
        return "answer", row["answer"]
    return "question", row["question"]


def cosines(embedder: Embedder, texts: list[str], references: list[str]) -> np.ndarray:
    """Row-wise cosine of texts[i] and references[i] (one encode call for both lists)."""
    vectors = embedder.embed(texts + references)
    a, b = vectors[: len(texts)], vectors[len(texts):]
    return np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0)


def run(store: Store, config: ScoreConfig, *, run_id: str | None = None, embedder: Embedder | None = None) -> int:
    """Score every candidate not yet scored under this version; return the rows written."""
    embedder = embedder or Embedder(store, config.embedding_model, batch_size=config.batch_size)
    ver = version(config)
    written = 0
    for chunk in pending_candidates(store, NAME, ver, chunk_size=config.chunk_size):
        refs = [reference(row) for row in chunk]
        values = cosines(embedder, [row["text"] for row in chunk], [text for _, text in refs])
        written += write_scores(store, [
            {"candidate_id": row["candidate_id"], "scorer": NAME, "scorer_version": ver,
             "value": float(value), "detail": {"against": against}, "run_id": run_id}
            for row, (against, _), value in zip(chunk, refs, values)
        ])
    return written
