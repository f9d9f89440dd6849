"""`similarity`: cosine of a candidate and its fact, with a cached sentence-transformers model.

A negative or a refusal is compared with the fact's answer (a valid negative is on the answer's
topic without restating it); a paraphrase or an attack with the fact's question (it must keep the
question's meaning).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lune.generators.config import ScoreConfig
from lune.generators.scorers.base import Score, Scorer
from lune.generators.scorers.embedding import Embedder, model_key

ANSWER_KINDS = frozenset({"negative", "refusal"})


def reference(row: dict[str, Any]) -> tuple[str, str]:
    """(what the candidate is compared with, its text)."""
    if row["kind"] in ANSWER_KINDS:
        return "answer", row["answer"]
    return "question", row["question"]


def cosines(embedder: Embedder, texts: list[str], references: list[str]) -> np.ndarray:
    """Row-wise cosine of texts[i] and references[i] (one encode call for both lists)."""
    vectors = embedder.embed(texts + references)
    a, b = vectors[: len(texts)], vectors[len(texts) :]
    return np.clip(np.einsum("ij,ij->i", a, b), -1.0, 1.0)


class Similarity(Scorer):
    """Embeds each batch's candidates and references through the run's shared, cached embedder."""

    name = "similarity"

    @classmethod
    def version(cls, config: ScoreConfig) -> str:
        return f"1:{model_key(config.embedding_model)}"

    def score(self, rows: list[dict[str, Any]]) -> list[Score]:
        refs = [reference(row) for row in rows]
        values = cosines(self.context.embedder, [row["text"] for row in rows], [text for _, text in refs])
        return [
            Score(row["candidate_id"], float(value), {"against": against})
            for row, (against, _), value in zip(rows, refs, values, strict=True)
        ]
