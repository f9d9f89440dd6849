"""SQL of the evaluate stage: the probe sets it reads, the results it writes, the runs it reports.

Every function takes an open :class:`data.store.Store`; rows come back as dicts. The probe-set
logic (what goes in which set) is in ``evaluation/probes.py``; this module only fetches.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from lune.data.errors import LuneError
from lune.data.store import Store

FACT_COLUMNS = "f.fact_id, f.corpus, f.subject, f.question, f.answer, f.key_span, f.split, f.group_name"
NEIGHBOR_GROUP = "neighbor_level%"


# -- curated sets (their rows come from data.export.curated_rows) --------------------------------


def latest_set(store: Store) -> dict[str, Any] | None:
    """The most recently created curated set, or None."""
    rows = store.query("SELECT set_id, name, version FROM curated_sets ORDER BY created_at DESC, version DESC LIMIT 1")
    return rows[0] if rows else None


# -- facts and dataset probes ------------------------------------------------------------------


def facts_by_id(store: Store, fact_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Facts with the given ids (any split), in id order."""
    if not fact_ids:
        return []
    return store.query(
        f"SELECT {FACT_COLUMNS} FROM facts f WHERE f.fact_id IN (SELECT unnest(?)) ORDER BY f.fact_id", [list(fact_ids)]
    )


def facts_of_split(store: Store, split: str, *, neighbor: bool | None = None) -> list[dict[str, Any]]:
    """Facts of ``split``; ``neighbor=True`` keeps only RWKU neighbor facts (group ``neighbor_level*``),
    ``False`` leaves them out, ``None`` takes all."""
    condition = {
        True: f"AND f.group_name LIKE '{NEIGHBOR_GROUP}'",
        False: f"AND (f.group_name IS NULL OR f.group_name NOT LIKE '{NEIGHBOR_GROUP}')",
        None: "",
    }[neighbor]
    return store.query(f"SELECT {FACT_COLUMNS} FROM facts f WHERE f.split = ? {condition} ORDER BY f.fact_id", [split])


def fact_probes(store: Store, kinds: Sequence[str], fact_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Dataset probes of the given kinds attached to the given facts, with the fact's key span."""
    if not fact_ids or not kinds:
        return []
    return store.query(
        "SELECT p.probe_id, p.fact_id, p.kind, p.text, coalesce(p.answer, f.answer) AS answer, p.attack_type, "
        "f.key_span, f.answer AS fact_answer, coalesce(p.subject, f.subject) AS subject, p.corpus "
        "FROM probes p JOIN facts f ON f.fact_id = p.fact_id "
        "WHERE p.kind IN (SELECT unnest(?)) AND p.fact_id IN (SELECT unnest(?)) ORDER BY p.probe_id",
        [list(kinds), list(fact_ids)],
    )


def subject_probes(
    store: Store, kinds: Sequence[str], subjects: Sequence[str], corpora: Sequence[str]
) -> list[dict[str, Any]]:
    """Dataset probes tied to a subject only (no fact: RWKU adversarial queries and MIA texts) whose
    subject is one of ``subjects`` within ``corpora``."""
    if not subjects or not kinds:
        return []
    return store.query(
        "SELECT p.probe_id, p.fact_id, p.kind, p.text, p.answer, p.attack_type, p.subject, p.corpus "
        "FROM probes p WHERE p.fact_id IS NULL AND p.kind IN (SELECT unnest(?)) "
        "AND p.subject IN (SELECT unnest(?)) AND p.corpus IN (SELECT unnest(?)) ORDER BY p.probe_id",
        [list(kinds), list(subjects), list(corpora)],
    )


def corpus_probes(store: Store, kind: str, corpora: Sequence[str]) -> list[dict[str, Any]]:
    """Every probe of ``kind`` in ``corpora`` (MIA non-member texts)."""
    if not corpora:
        return []
    return store.query(
        "SELECT p.probe_id, p.fact_id, p.kind, p.text, p.answer, p.attack_type, p.subject, p.corpus "
        "FROM probes p WHERE p.kind = ? AND p.corpus IN (SELECT unnest(?)) ORDER BY p.probe_id",
        [kind, list(corpora)],
    )


# -- writing results ---------------------------------------------------------------------------


def write_results(
    store: Store, results: Sequence[Mapping[str, Any]], items: Sequence[Mapping[str, Any]]
) -> tuple[int, int]:
    """Store ``eval_results`` and ``eval_items`` rows together (a rerun of the same run replaces them)."""
    with store.transaction():
        n_results = store.insert("eval_results", list(results), replace=True)
        n_items = store.insert("eval_items", list(items), replace=True)
    return n_results, n_items


# -- reading a run back ------------------------------------------------------------------------


def run_row(store: Store, run_id: str) -> dict[str, Any]:
    rows = store.query(
        "SELECT run_id, kind, status, config, metrics, artefacts, started_at, finished_at FROM runs WHERE run_id = ?",
        [run_id],
    )
    if not rows:
        recent = [r["run_id"] for r in store.query("SELECT DISTINCT run_id FROM eval_results ORDER BY run_id LIMIT 10")]
        raise LuneError(
            f"no run {run_id!r} in {store.path}; runs with evaluation results: "
            f"{', '.join(recent) or 'none (run `lune evaluate`)'}"
        )
    row = rows[0]
    for key in ("config", "metrics", "artefacts"):
        row[key] = json.loads(row[key]) if row[key] else {}
    return row


def run_results(store: Store, run_id: str) -> list[dict[str, Any]]:
    return store.query(
        "SELECT model_label, method, probe_set, metric, value, n, detail FROM eval_results WHERE run_id = ? "
        "ORDER BY model_label, probe_set, metric",
        [run_id],
    )


def run_items(store: Store, run_id: str, probe_sets: Sequence[str] | None = None) -> list[dict[str, Any]]:
    sql = (
        "SELECT model_label, method, probe_set, fact_id, probe_id, attack_type, prompt, expected, generation, "
        "verdict, score, detail FROM eval_items WHERE run_id = ?"
    )
    params: list[Any] = [run_id]
    if probe_sets is not None:
        sql += " AND probe_set IN (SELECT unnest(?))"
        params.append(list(probe_sets))
    return store.query(sql + " ORDER BY model_label, probe_set, probe_id", params)


def run_leaks(store: Store, run_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """Rows of ``v_leaks`` for one run (what still leaks after unlearning)."""
    return store.query(
        "SELECT model_label, probe_set, attack_type, prompt, expected, generation FROM v_leaks "
        "WHERE run_id = ? ORDER BY model_label, probe_set, attack_type, prompt LIMIT ?",
        [run_id, limit],
    )


def latest_evaluate_run(store: Store) -> str | None:
    return store.scalar(
        "SELECT run_id FROM runs WHERE kind = 'evaluate' AND status = 'completed' ORDER BY finished_at DESC LIMIT 1"
    )
