"""All SQL of the generate stage, over :class:`data.store.Store`.

Reads: the facts to generate for (a split and / or a user's WHERE condition), the corpus facts the
rules backend borrows spans from, the dataset probes that become candidates, the completed batches.
Writes: a completed batch's record. Candidates and rejections are written with ``Store.insert`` /
``Store.reject`` by the flow, in the same transaction as the batch record.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lune.data.safe_sql import filter_rows
from lune.data.store import Store

FACT_COLUMNS = "fact_id, corpus, subject, question, answer, key_span, split, group_name"
# Probe kinds that become candidates (see generators/backends/dataset_backend.py).
CANDIDATE_PROBE_KINDS = ("perturbed_answer", "negative_text", "paraphrased_question", "adversarial")


WHERE_OPTION = "generate.where (--where)"


def select_facts(store: Store, *, split: str | None = None, where: str | None = None) -> list[dict[str, Any]]:
    """Facts of ``split`` (None: all) matching the SQL condition ``where`` (None: all), by fact id.

    ``where`` is a user's text: it must parse as one expression, and it is evaluated in a sandbox
    holding only the facts of ``split`` (``data.safe_sql.filter_rows``), never on the store's connection.
    """
    sql, params = "SELECT * FROM facts", []
    if split:
        sql, params = sql + " WHERE split = ?", [split]
    if not (where and where.strip()):
        return store.query(f"SELECT {FACT_COLUMNS} FROM ({sql}) ORDER BY fact_id", params)
    rows = filter_rows(store.arrow(sql + " ORDER BY fact_id", params), where, option=WHERE_OPTION, table="facts")
    return rows.select([c.strip() for c in FACT_COLUMNS.split(",")]).to_pylist()


def count_facts(store: Store, *, split: str | None = None, where: str | None = None) -> int:
    """How many facts :func:`select_facts` would return (and a clear error for a bad ``where``)."""
    return len(select_facts(store, split=split, where=where))


def corpus_facts(store: Store, corpora: Iterable[str]) -> list[dict[str, Any]]:
    """Every fact of ``corpora`` (all splits): where the rules backend borrows same-type spans."""
    corpora = sorted(set(corpora))
    if not corpora:
        return []
    return store.query(
        "SELECT fact_id, subject, question, answer, key_span FROM facts "
        "WHERE list_contains(?, corpus) ORDER BY fact_id",
        [corpora],
    )


def probes_for_facts(
    store: Store, fact_ids: Sequence[str], kinds: Sequence[str] = CANDIDATE_PROBE_KINDS
) -> dict[str, list[dict[str, Any]]]:
    """Dataset probes of ``kinds`` for each fact, as ``{fact_id: [probe, ...]}``.

    A probe tied to a subject only (an RWKU negative text; an RWKU attack whose query is not a
    fact's question) goes to the forget fact of the same corpus and subject with the same answer
    when there is one, else to the subject's anchor fact (its forget fact with the smallest id), so
    it becomes a candidate once, the same way on every run.
    """
    if not fact_ids:
        return {}
    rows = store.query(
        """
        WITH wanted AS (SELECT unnest(?::VARCHAR[]) AS fact_id),
        anchors AS (
            SELECT corpus, subject, min(fact_id) AS fact_id
            FROM facts WHERE split = 'forget' AND subject IS NOT NULL
            GROUP BY corpus, subject
        ),
        same_answer AS (
            SELECT corpus, subject, lower(trim(answer)) AS answer, min(fact_id) AS fact_id
            FROM facts WHERE split = 'forget' AND subject IS NOT NULL
            GROUP BY ALL
        ),
        linked AS (
            SELECT coalesce(p.fact_id, s.fact_id, a.fact_id) AS target, p.probe_id, p.kind, p.text, p.attack_type
            FROM probes p
            LEFT JOIN same_answer s ON p.fact_id IS NULL AND s.corpus = p.corpus AND s.subject = p.subject
                                   AND s.answer = lower(trim(p.answer))
            LEFT JOIN anchors a ON p.fact_id IS NULL AND a.corpus = p.corpus AND a.subject = p.subject
            WHERE list_contains(?, p.kind)
        )
        SELECT l.* FROM linked l JOIN wanted w ON w.fact_id = l.target
        ORDER BY l.target, l.kind, l.probe_id
        """,
        [list(fact_ids), list(kinds)],
    )
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        target = row.pop("target")
        out[target].append(row)
    return dict(out)


def completed_batches(store: Store, batch_ids: Sequence[str]) -> set[str]:
    """Which of ``batch_ids`` a previous run completed."""
    if not batch_ids:
        return set()
    rows = store.query("SELECT batch_id FROM generation_batches WHERE list_contains(?, batch_id)", [list(batch_ids)])
    return {r["batch_id"] for r in rows}


def record_batch(store: Store, record: Mapping[str, Any]) -> None:
    """Mark a batch complete (written in the same transaction as its candidates)."""
    row = dict(record)
    row["fact_ids"] = json.dumps(list(row["fact_ids"]))
    columns = [
        "batch_id",
        "run_id",
        "generator",
        "model",
        "batch_index",
        "facts",
        "fact_ids",
        "requests",
        "outputs",
        "candidates",
        "new_candidates",
        "rejected",
        "seconds",
    ]
    store.execute(
        f"INSERT OR REPLACE INTO generation_batches ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [row.get(c) for c in columns],
    )


def batch_records(store: Store, run_id: str | None = None) -> list[dict[str, Any]]:
    """Completed batch records (of one run, or all), in completion order."""
    sql = "SELECT * FROM generation_batches"
    params: list[Any] = []
    if run_id:
        sql += " WHERE run_id = ?"
        params.append(run_id)
    return store.query(sql + " ORDER BY completed_at, batch_index", params)
