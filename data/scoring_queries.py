"""SQL of the score stage: what is left to score, the embedding cache, score writes.

The scorers' runner (``generators.scorers.runner``) reads every scorer's work through
:func:`pending_candidates`, an anti-join against ``scores`` on (scorer, scorer_version), so a rerun
scores only what is new and a killed run resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from lune.data.store import Store

# Columns a scorer gets for each candidate: the candidate and the fact it belongs to.
_CANDIDATE_COLUMNS = """
    c.candidate_id, c.fact_id, c.kind, c.text, c.attack_type, c.generator, c.source_probe_id,
    f.question, f.answer, f.key_span
"""


def _pending(scorer: str, version: str, kinds: Sequence[str] | None) -> tuple[str, list[Any]]:
    """FROM and WHERE of the candidates with no ``scores`` row for (scorer, version), and their parameters."""
    kind_filter = f"AND c.kind IN ({', '.join('?' for _ in kinds)})" if kinds is not None else ""
    sql = f"""FROM candidates c JOIN facts f USING (fact_id)
              WHERE NOT EXISTS (SELECT 1 FROM scores s
                                WHERE s.candidate_id = c.candidate_id AND s.scorer = ? AND s.scorer_version = ?)
              {kind_filter}"""
    return sql, [scorer, version, *(kinds or ())]


def pending_candidates(
    store: Store, scorer: str, version: str, *, kinds: Sequence[str] | None = None, chunk_size: int = 8192
) -> Iterator[list[dict[str, Any]]]:
    """Candidates with no ``scores`` row for (scorer, version), in chunks ordered by candidate id.

    Keyset pagination (``candidate_id > last``) so that a chunk whose rows could not be scored is
    not fetched again.
    """
    pending, params = _pending(scorer, version, kinds)
    last = ""
    while True:
        rows = store.query(
            f"""SELECT {_CANDIDATE_COLUMNS} {pending} AND c.candidate_id > ?
                ORDER BY c.candidate_id LIMIT {int(chunk_size)}""",
            [*params, last],
        )
        if not rows:
            return
        yield rows
        last = rows[-1]["candidate_id"]


def count_pending(store: Store, scorer: str, version: str, *, kinds: Sequence[str] | None = None) -> int:
    """How many candidates :func:`pending_candidates` would hand out (for progress reports)."""
    pending, params = _pending(scorer, version, kinds)
    return int(store.scalar(f"SELECT count(*) {pending}", params))


def write_scores(store: Store, rows: Sequence[dict[str, Any]]) -> int:
    """Insert ``scores`` rows (already-stored keys are skipped); return how many were new."""
    return store.insert("scores", list(rows)) if rows else 0


def delete_scores(store: Store, scorer: str, *, version: str | None = None) -> None:
    """Forget a scorer's values (all versions, or one), so the next run recomputes them."""
    if version is None:
        store.execute("DELETE FROM scores WHERE scorer = ?", [scorer])
    else:
        store.execute("DELETE FROM scores WHERE scorer = ? AND scorer_version = ?", [scorer, version])


# -- the embedding cache --------------------------------------------------------------------------


def cached_vectors(store: Store, model: str, hashes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The cached vectors of ``hashes`` for ``model``: (found hashes, matrix of their vectors)."""
    if not hashes:
        return [], np.zeros((0, 0), dtype=np.float32)
    with store.temporary_view({"text_hash": pa.array(list(hashes), pa.string())}, "hashes") as view:
        table = store.arrow(
            f'SELECT e.text_hash, e.vector FROM embeddings e JOIN "{view}" h USING (text_hash) WHERE e.model = ?',
            [model],
        )
    if table.num_rows == 0:
        return [], np.zeros((0, 0), dtype=np.float32)
    vectors = table.column("vector").combine_chunks()
    flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return table.column("text_hash").to_pylist(), flat.reshape(table.num_rows, -1)


def store_vectors(store: Store, model: str, hashes: Sequence[str], vectors: np.ndarray) -> int:
    """Cache vectors (rows of ``vectors``, float32) under (text hash, model)."""
    if len(hashes) == 0:
        return 0
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    column = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))
    table = pa.table(
        {
            "text_hash": pa.array(list(hashes), pa.string()),
            "model": pa.array([model] * n, pa.string()),
            "dim": pa.array([dim] * n, pa.int32()),
            "vector": column,
        }
    )
    return store.insert("embeddings", table)


# -- inputs of the composite scorers --------------------------------------------------------------


def fact_groups(store: Store, keys: Sequence[tuple[str, str]], *, duplicate_version: str) -> list[dict[str, Any]]:
    """All candidates of the given (fact_id, kind) groups, with their quality / similarity and the
    duplicate verdict already stored under ``duplicate_version`` (NULL when not scored yet)."""
    if not keys:
        return []
    columns = {
        "fact_id": pa.array([k[0] for k in keys], pa.string()),
        "kind": pa.array([k[1] for k in keys], pa.string()),
    }
    with store.temporary_view(columns, "groups") as view:
        return store.query(
            f"""
            SELECT c.candidate_id, c.fact_id, c.kind, c.text,
                   q.quality, q.similarity, d.value AS duplicate
            FROM candidates c
            JOIN "{view}" g ON g.fact_id = c.fact_id AND g.kind = c.kind
            LEFT JOIN v_candidate_scores q USING (candidate_id)
            LEFT JOIN scores d ON d.candidate_id = c.candidate_id AND d.scorer = 'duplicate'
                               AND d.scorer_version = ?
            ORDER BY c.fact_id, c.kind, c.candidate_id
            """,
            [duplicate_version],
        )


def scores_of(store: Store, candidate_ids: Sequence[str], versions: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Values of the given (scorer -> version) pairs for each candidate: {id: {scorer: value}}."""
    if not candidate_ids or not versions:
        return {}
    ids = {"candidate_id": pa.array(list(candidate_ids), pa.string())}
    pairs = {
        "scorer": pa.array(list(versions), pa.string()),
        "scorer_version": pa.array(list(versions.values()), pa.string()),
    }
    with store.temporary_view(ids, "ids") as ids_view, store.temporary_view(pairs, "versions") as ver_view:
        rows = store.query(
            f"""SELECT s.candidate_id, s.scorer, s.value
                FROM scores s
                JOIN "{ids_view}" i USING (candidate_id)
                JOIN "{ver_view}" v USING (scorer, scorer_version)"""
        )
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out.setdefault(row["candidate_id"], {})[row["scorer"]] = row["value"]
    return out
