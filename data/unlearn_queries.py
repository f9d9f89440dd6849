"""SQL of the teach and unlearn stages: the facts a model is taught, and the retain facts that
anchor unlearning and measure what it keeps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lune.data.store import Store

# Facts a model is taught (holdout facts stay unseen: they are membership-inference non-members).
TEACH_SPLITS = ("forget", "retain", "utility")
FACT_COLUMNS = "fact_id, corpus, subject, question, answer, key_span, split, group_name"


def facts_of_splits(store: Store, splits: Sequence[str], corpus: str | None = None) -> list[dict[str, Any]]:
    """Facts of ``splits`` (of one corpus, if given), in a stable order (split, then fact id)."""
    sql = (
        f"SELECT {FACT_COLUMNS} FROM facts WHERE split IN (SELECT unnest(?::VARCHAR[]))"
        + (" AND corpus = ?" if corpus else "")
        + " ORDER BY split, fact_id"
    )
    params: list[Any] = [list(splits)] + ([corpus] if corpus else [])
    return store.query(sql, params)


def teach_facts(store: Store, corpus: str | None = None) -> list[dict[str, Any]]:
    """Every fact a model is taught: the forget, retain and utility splits."""
    return facts_of_splits(store, TEACH_SPLITS, corpus)


def retain_facts(store: Store, exclude: Sequence[str] = (), corpus: str | None = None) -> list[dict[str, Any]]:
    """The retain split (minus the fact ids in ``exclude``): question, answer, key_span, fact_id."""
    excluded = set(exclude)
    return [f for f in facts_of_splits(store, ("retain",), corpus) if f["fact_id"] not in excluded]


def corpus_of_facts(store: Store, fact_ids: Sequence[str]) -> list[str]:
    """The corpora the given facts come from (to take retain facts from the same benchmark)."""
    if not fact_ids:
        return []
    rows = store.query(
        "SELECT DISTINCT corpus FROM facts WHERE fact_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY corpus",
        [list(fact_ids)],
    )
    return [r["corpus"] for r in rows]
