"""SQL of the score stage: what is left to score, the embedding cache, score writes.

Every scorer reads its work through :func:`pending_candidates`, an anti-join against ``scores`` on
(scorer, scorer_version), so a rerun scores only what is new and a crash resumes where it stopped.
"""

from __future__ import annotations

import uuid
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


def pending_candidates(store: Store, scorer: str, version: str, *, kinds: Sequence[str] | None = None,
                       chunk_size: int = 8192) -> Iterator[list[dict[str, Any]]]:
    """Candidates with no ``scores`` row for (scorer, version), in chunks ordered by candidate id.

    Keyset pagination (``candidate_id > last``) so that a chunk whose rows could not be scored is
    not fetched again.
    """
    kind_filter = ""
    params: list[Any] = [scorer, version]
    if kinds is not None:
        kind_filter = f"AND c.kind IN ({', '.join('?' for _ in kinds)})"
        params += list(kinds)
    last = ""
    while True:
        rows = store.query(
            f"""
            SELECT {_CANDIDATE_COLUMNS}
            FROM candidates c JOIN facts f USING (fact_id)
            WHERE NOT EXISTS (SELECT 1 FROM scores s
                              WHERE s.candidate_id = c.candidate_id AND s.scorer = ? AND s.scorer_version = ?)
              {kind_filter}
              AND c.candidate_id > ?
            ORDER BY c.candidate_id
            LIMIT {int(chunk_size)}
            """,
            [*params, last],
        )
        if not rows:
            return
        yield rows
        last = rows[-1]["candidate_id"]


def count_pending(store: Store, scorer: str, version: str, *, kinds: Sequence[str] | None = None) -> int:
    kind_filter, params = "", [scorer, version]
    if kinds is not None:
        kind_filter = f"AND c.kind IN ({', '.join('?' for _ in kinds)})"
        params += list(kinds)
    return int(store.scalar(
        f"""SELECT count(*) FROM candidates c JOIN facts f USING (fact_id)
            WHERE NOT EXISTS (SELECT 1 FROM scores s
                              WHERE s.candidate_id = c.candidate_id AND s.scorer = ? AND s.scorer_version = ?)
            {kind_filter}""",
        params,
    ))


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
    view = f"_lune_hashes_{uuid.uuid4().hex}"
    store.con.register(view, pa.table({"text_hash": pa.array(list(hashes), pa.string())}))
    try:
        table = store.arrow(
            f'SELECT e.text_hash, e.vector FROM embeddings e JOIN "{view}" h USING (text_hash) WHERE e.model = ?',
            [model],
        )
    finally:
        store.con.unregister(view)
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
    table = pa.table({
        "text_hash": pa.array(list(hashes), pa.string()),
        "model": pa.array([model] * n, pa.string()),
        "dim": pa.array([dim] * n, pa.int32()),
        "vector": column,
    })
    return store.insert("embeddings", table)


# -- inputs of the composite scorers --------------------------------------------------------------


def latest_scores(store: Store, candidate_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every scorer's latest value and version for each candidate: {id: {scorer: (value, version)}}."""
    if not candidate_ids:
        return {}
    view = f"_lune_ids_{uuid.uuid4().hex}"
    store.con.register(view, pa.table({"candidate_id": pa.array(list(candidate_ids), pa.string())}))
    try:
        rows = store.query(
            f"""SELECT s.candidate_id, s.scorer,
                       arg_max(s.value, s.created_at) AS value,
                       arg_max(s.scorer_version, s.created_at) AS version
                FROM scores s JOIN "{view}" v USING (candidate_id)
                GROUP BY ALL"""
        )
    finally:
        store.con.unregister(view)
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out.setdefault(row["candidate_id"], {})[row["scorer"]] = (row["value"], row["version"])
    return out


def scorer_versions(store: Store) -> dict[str, list[str]]:
    """Stored versions of each scorer, most recent first."""
    rows = store.query("SELECT scorer, scorer_version, max(created_at) AS at FROM scores GROUP BY ALL ORDER BY at DESC")
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["scorer"], []).append(row["scorer_version"])
    return out


def fact_groups(store: Store, keys: Sequence[tuple[str, str]], *, duplicate_version: str) -> list[dict[str, Any]]:
    """All candidates of the given (fact_id, kind) groups, with their quality / similarity and the
    duplicate verdict already stored under ``duplicate_version`` (NULL when not scored yet)."""
    if not keys:
        return []
    view = f"_lune_groups_{uuid.uuid4().hex}"
    store.con.register(view, pa.table({"fact_id": pa.array([k[0] for k in keys], pa.string()),
                                       "kind": pa.array([k[1] for k in keys], pa.string())}))
    try:
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
    finally:
        store.con.unregister(view)


def score_summary(store: Store) -> list[dict[str, Any]]:
    """Per scorer and version: how many candidates it scored, mean value, and how many have no value."""
    return store.query(
        """SELECT scorer, scorer_version, count(*) AS scored, avg(value) AS mean,
                  count(*) FILTER (WHERE value IS NULL) AS without_value
           FROM scores GROUP BY ALL ORDER BY scorer, scorer_version"""
    )


def scores_of(store: Store, candidate_ids: Sequence[str], versions: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Values of the given (scorer -> version) pairs for each candidate: {id: {scorer: value}}."""
    if not candidate_ids or not versions:
        return {}
    ids_view = f"_lune_ids_{uuid.uuid4().hex}"
    ver_view = f"_lune_versions_{uuid.uuid4().hex}"
    store.con.register(ids_view, pa.table({"candidate_id": pa.array(list(candidate_ids), pa.string())}))
    store.con.register(ver_view, pa.table({"scorer": pa.array(list(versions), pa.string()),
                                           "scorer_version": pa.array(list(versions.values()), pa.string())}))
    try:
        rows = store.query(
            f"""SELECT s.candidate_id, s.scorer, s.value
                FROM scores s
                JOIN "{ids_view}" i USING (candidate_id)
                JOIN "{ver_view}" v USING (scorer, scorer_version)"""
        )
    finally:
        store.con.unregister(ids_view)
        store.con.unregister(ver_view)
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out.setdefault(row["candidate_id"], {})[row["scorer"]] = row["value"]
    return out
