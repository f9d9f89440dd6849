"""SQL of the curate and export stages: policy verdicts, curated sets and their rows.

A policy's gates and top-k run as one INSERT ... SELECT over ``v_candidate_scores`` (a pivot of
``scores``), so deciding a million candidates is one DuckDB statement; only the train / eval split
of paraphrases and attacks (which needs embeddings) happens in Python (``generators/curation.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from lune.data.store import Store

_FROM_DATASET = "(c.kind IN ('paraphrase', 'attack') AND (c.generator = 'dataset' OR c.source_probe_id IS NOT NULL))"


def _in_list(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def decide_verdicts(
    store: Store, set_id: str, policies: dict[str, dict[str, Any]], splits: Sequence[str], *, span_answer_words: int = 3
) -> None:
    """(Re)write the gate-and-rank verdicts of ``set_id``: one row per candidate of the facts in
    ``splits``, plus one per dataset eval probe that is not already a candidate.

    ``policies`` maps each kind to its thresholds (``KindPolicy`` fields); a candidate of a kind it
    lacks is dropped as 'unknown_kind'. The drop reasons, in the order the gates are tried, are
    explained in docs/scoring.md. Candidates that pass the gates are ranked per fact and kind by
    quality, best first (worst first where the policy has ``prefer: worst``); ``top_k`` keeps the
    first. Kept negatives and
    refusals get role 'train', dataset-provided paraphrases and attacks role 'eval'; kept generated
    paraphrases and attacks get no role yet (``assign_roles`` splits them). Negatives and refusals
    of facts whose answer has at most ``span_answer_words`` words skip the similarity gates.
    """
    store.execute("DELETE FROM candidate_verdicts WHERE set_id = ?", [set_id])
    values, params = [], []
    for kind, p in policies.items():
        values.append(
            "(?, ?::DOUBLE, ?::DOUBLE, ?::DOUBLE, ?::DOUBLE, ?::DOUBLE, ?::DOUBLE, ?::DOUBLE, ?::BOOLEAN, ?::INTEGER, "
            "?::BOOLEAN)"
        )
        params += [
            kind,
            p.get("min_similarity"),
            p.get("max_similarity"),
            p.get("max_answer_leak"),
            p.get("min_contradiction"),
            p.get("min_fluency"),
            p.get("min_quality"),
            p.get("max_quality"),
            bool(p.get("drop_duplicates", True)),
            p.get("top_k"),
            p.get("prefer", "best") == "worst",
        ]
    splits = list(splits)
    store.execute(
        f"""
        INSERT INTO candidate_verdicts (set_id, candidate_id, fact_id, kind, keep, reason, role, rank)
        WITH policy(kind, min_sim, max_sim, max_leak, min_contra, min_flu, min_q, max_q, drop_dup, top_k, worst) AS (
            VALUES {", ".join(values)}
        ),
        scope AS (
            SELECT c.candidate_id, c.fact_id, c.kind, {_FROM_DATASET} AS from_dataset,
                   NOT (c.kind IN ('negative', 'refusal') AND f.span_answer) AS sim_gated,
                   s.similarity, s.answer_leak, s.contradiction, s.fluency, s.duplicate, s.quality
            FROM candidates c
            JOIN (SELECT fact_id, len(string_split(trim(answer), ' ')) <= ?::INTEGER AS span_answer
                  FROM facts WHERE split IN ({_in_list(splits)})) f ON f.fact_id = c.fact_id
            LEFT JOIN v_candidate_scores s ON s.candidate_id = c.candidate_id
        ),
        gated AS (
            SELECT scope.*, p.top_k, coalesce(p.worst, false) AS worst,
                CASE
                    WHEN from_dataset THEN NULL
                    WHEN p.kind IS NULL THEN 'unknown_kind'
                    WHEN p.max_leak IS NOT NULL AND answer_leak IS NULL THEN 'unscored:answer_leak'
                    WHEN answer_leak > p.max_leak THEN 'answer_leak'
                    WHEN sim_gated AND (p.min_sim IS NOT NULL OR p.max_sim IS NOT NULL) AND similarity IS NULL
                        THEN 'unscored:similarity'
                    WHEN sim_gated AND similarity < p.min_sim THEN 'off_topic'
                    WHEN sim_gated AND similarity >= p.max_sim AND scope.kind IN ('negative', 'refusal')
                        THEN 'restates_answer'
                    WHEN sim_gated AND similarity >= p.max_sim THEN 'copies_question'
                    WHEN contradiction < p.min_contra THEN 'no_contradiction'
                    WHEN p.min_flu IS NOT NULL AND fluency IS NULL THEN 'unscored:fluency'
                    WHEN fluency < p.min_flu THEN 'disfluent'
                    WHEN p.min_q IS NOT NULL AND quality IS NULL THEN 'unscored:quality'
                    WHEN quality < p.min_q THEN 'low_quality'
                    WHEN p.max_q IS NOT NULL AND quality IS NULL THEN 'unscored:quality'
                    WHEN quality >= p.max_q THEN 'above_quality_bin'
                    WHEN p.drop_dup AND duplicate >= 0.5 THEN 'duplicate'
                END AS gate
            FROM scope LEFT JOIN policy p ON p.kind = scope.kind
        ),
        ranked AS (
            SELECT *,
                CASE WHEN gate IS NULL AND NOT from_dataset THEN
                    row_number() OVER (PARTITION BY fact_id, kind, (gate IS NULL AND NOT from_dataset)
                                       ORDER BY CASE WHEN worst THEN quality END ASC NULLS LAST,
                                                quality DESC NULLS LAST, similarity DESC NULLS LAST, candidate_id)
                END AS rnk
            FROM gated
        )
        SELECT ?, candidate_id, fact_id, kind,
               from_dataset OR (gate IS NULL AND (top_k IS NULL OR rnk <= top_k)) AS keep,
               CASE WHEN from_dataset THEN 'dataset_probe'
                    WHEN gate IS NOT NULL THEN gate
                    WHEN top_k IS NOT NULL AND rnk > top_k THEN 'below_top_k'
                    ELSE 'kept' END AS reason,
               CASE WHEN from_dataset THEN 'eval'
                    WHEN gate IS NULL AND (top_k IS NULL OR rnk <= top_k) AND kind IN ('negative', 'refusal')
                        THEN 'train' END AS role,
               rnk
        FROM ranked
        """,
        [*params, int(span_answer_words), *splits, set_id],
    )
    store.execute(
        f"""
        INSERT INTO candidate_verdicts (set_id, candidate_id, fact_id, kind, keep, reason, role, rank)
        SELECT ?, p.probe_id, p.fact_id,
               CASE p.kind WHEN 'paraphrased_question' THEN 'paraphrase' ELSE 'attack' END,
               true, 'dataset_probe', 'eval', NULL
        FROM probes p
        JOIN facts f ON f.fact_id = p.fact_id AND f.split IN ({_in_list(splits)})
        WHERE p.kind IN ('paraphrased_question', 'adversarial')
          AND NOT EXISTS (SELECT 1 FROM candidates c WHERE c.source_probe_id = p.probe_id)
        """,
        [set_id, *splits],
    )


def prompt_items(store: Store, set_id: str) -> list[dict[str, Any]]:
    """Kept paraphrases and attacks of a set (generated and dataset), with their text and the fact's
    question, ordered by fact then rank: the input of the train / eval split."""
    return store.query(
        """
        SELECT v.candidate_id, v.fact_id, v.kind, v.role, v.rank, coalesce(c.text, p.text) AS text, f.question,
               coalesce(c.attack_type, p.attack_type) AS attack_type
        FROM candidate_verdicts v
        JOIN facts f ON f.fact_id = v.fact_id
        LEFT JOIN candidates c ON c.candidate_id = v.candidate_id
        LEFT JOIN probes p ON p.probe_id = v.candidate_id
        WHERE v.set_id = ? AND v.keep AND v.kind IN ('paraphrase', 'attack')
        ORDER BY v.fact_id, v.role NULLS LAST, v.rank NULLS LAST, v.candidate_id
        """,
        [set_id],
    )


def assign_roles(store: Store, set_id: str, updates: Sequence[dict[str, Any]]) -> None:
    """Apply (candidate_id, keep, reason, role) decisions of the train / eval split."""
    if not updates:
        return
    with store.temporary_view(
        {
            "candidate_id": pa.array([u["candidate_id"] for u in updates], pa.string()),
            "keep": pa.array([bool(u["keep"]) for u in updates], pa.bool_()),
            "reason": pa.array([u["reason"] for u in updates], pa.string()),
            "role": pa.array([u["role"] for u in updates], pa.string()),
        },
        "roles",
    ) as view:
        store.execute(
            f"""UPDATE candidate_verdicts v SET keep = u.keep, reason = u.reason, role = u.role
                FROM "{view}" u WHERE v.set_id = ? AND v.candidate_id = u.candidate_id""",
            [set_id],
        )


def verdict_counts(store: Store, set_id: str) -> dict[str, Any]:
    """Kept per kind and role, dropped per reason, and the number of facts of a set's verdicts."""
    kept = store.query(
        """SELECT kind, role, count(*) AS n FROM candidate_verdicts WHERE set_id = ? AND keep
           GROUP BY ALL ORDER BY kind, role""",
        [set_id],
    )
    dropped = store.query(
        """SELECT reason, count(*) AS n FROM candidate_verdicts WHERE set_id = ? AND NOT keep
           GROUP BY ALL ORDER BY n DESC, reason""",
        [set_id],
    )
    return {
        "kept": {f"{r['kind']}:{r['role']}": r["n"] for r in kept},
        "dropped": {r["reason"]: r["n"] for r in dropped},
    }


def facts_below_minimum(store: Store, set_id: str, splits: Sequence[str], minimum: int) -> list[dict[str, Any]]:
    """Facts of the scope with fewer than ``minimum`` kept training targets (negatives, refusals)."""
    splits = list(splits)
    return store.query(
        f"""
        SELECT f.fact_id, f.subject, f.question,
               count(v.candidate_id) FILTER (WHERE v.keep AND v.kind IN ('negative', 'refusal')) AS kept_targets,
               count(v.candidate_id) FILTER (WHERE v.kind IN ('negative', 'refusal')) AS target_candidates,
               mode(v.reason) FILTER (WHERE NOT v.keep AND v.kind IN ('negative', 'refusal')) AS top_drop_reason
        FROM facts f
        LEFT JOIN candidate_verdicts v ON v.fact_id = f.fact_id AND v.set_id = ?
        WHERE f.split IN ({_in_list(splits)})
        GROUP BY ALL
        HAVING count(v.candidate_id) FILTER (WHERE v.keep AND v.kind IN ('negative', 'refusal')) < ?
        ORDER BY kept_targets, f.fact_id
        """,
        [set_id, *splits, minimum],
    )


def scope_fact_count(store: Store, splits: Sequence[str]) -> int:
    splits = list(splits)
    return int(store.scalar(f"SELECT count(*) FROM facts WHERE split IN ({_in_list(splits)})", splits))


def items_fingerprint(store: Store, set_id: str) -> str:
    """Hash of a set's kept items and their roles (two curations that keep the same are one version)."""
    return (
        store.scalar(
            """SELECT coalesce(md5(string_agg(candidate_id || ':' || role, ',' ORDER BY candidate_id)), '')
           FROM candidate_verdicts WHERE set_id = ? AND keep""",
            [set_id],
        )
        or ""
    )


def latest_set(store: Store, name: str) -> dict[str, Any] | None:
    rows = store.query("SELECT * FROM curated_sets WHERE name = ? ORDER BY version DESC LIMIT 1", [name])
    return rows[0] if rows else None


def find_set(store: Store, name: str, version: int | None = None) -> dict[str, Any] | None:
    """A curated set by name (latest version unless given) or by set id."""
    if version is None:
        rows = store.query("SELECT * FROM curated_sets WHERE set_id = ?", [name])
        if rows:
            return rows[0]
        return latest_set(store, name)
    rows = store.query("SELECT * FROM curated_sets WHERE name = ? AND version = ?", [name, int(version)])
    return rows[0] if rows else None


def set_names(store: Store) -> list[dict[str, Any]]:
    return store.query("SELECT name, max(version) AS latest FROM curated_sets GROUP BY name ORDER BY name")


def save_set(
    store: Store,
    *,
    set_id: str,
    name: str,
    version: int,
    policy: dict[str, Any],
    counts: dict[str, Any],
    run_id: str | None,
) -> None:
    """Write the ``curated_sets`` row and the kept items of ``set_id`` as ``curated_items``."""
    store.insert(
        "curated_sets",
        [{"set_id": set_id, "name": name, "version": version, "policy": policy, "counts": counts, "run_id": run_id}],
    )
    store.execute(
        """INSERT OR IGNORE INTO curated_items (set_id, candidate_id, fact_id, role, kind)
           SELECT set_id, candidate_id, fact_id, role, kind FROM candidate_verdicts WHERE set_id = ? AND keep""",
        [set_id],
    )


def delete_verdicts(store: Store, set_id: str) -> None:
    store.execute("DELETE FROM candidate_verdicts WHERE set_id = ?", [set_id])


def touch_verdicts(store: Store, set_id: str) -> None:
    """Make ``set_id`` the most recent verdicts (the one the views show)."""
    store.execute("UPDATE candidate_verdicts SET decided_at = current_timestamp WHERE set_id = ?", [set_id])


# -- rows of a curated set (export, unlearning) ---------------------------------------------------


def set_targets(store: Store, set_id: str) -> list[dict[str, Any]]:
    """Kept training targets (negatives, refusals) with their fact's question, best first per fact."""
    return store.query(
        """
        SELECT i.fact_id, i.candidate_id, i.kind, c.text, f.question, v.rank
        FROM curated_items i
        JOIN candidates c ON c.candidate_id = i.candidate_id
        JOIN facts f ON f.fact_id = i.fact_id
        LEFT JOIN candidate_verdicts v ON v.set_id = i.set_id AND v.candidate_id = i.candidate_id
        WHERE i.set_id = ? AND i.role = 'train' AND i.kind IN ('negative', 'refusal')
        ORDER BY i.fact_id, CASE i.kind WHEN 'negative' THEN 0 ELSE 1 END, v.rank NULLS LAST, i.candidate_id
        """,
        [set_id],
    )


def set_train_prompts(store: Store, set_id: str) -> list[dict[str, Any]]:
    """Kept train paraphrases and attacks, best first per fact."""
    return store.query(
        """
        SELECT i.fact_id, i.candidate_id, i.kind, c.text, v.rank
        FROM curated_items i
        JOIN candidates c ON c.candidate_id = i.candidate_id
        LEFT JOIN candidate_verdicts v ON v.set_id = i.set_id AND v.candidate_id = i.candidate_id
        WHERE i.set_id = ? AND i.role = 'train' AND i.kind IN ('paraphrase', 'attack')
        ORDER BY i.fact_id, v.rank NULLS LAST, i.candidate_id
        """,
        [set_id],
    )


def set_eval_items(store: Store, set_id: str) -> list[dict[str, Any]]:
    """Held-out eval prompts: generated or dataset candidates, and dataset probes."""
    return store.query(
        """
        SELECT i.fact_id, i.candidate_id AS item_id, coalesce(c.text, p.text) AS text, i.kind,
               coalesce(c.attack_type, p.attack_type) AS attack_type,
               CASE WHEN p.probe_id IS NOT NULL OR c.generator = 'dataset' OR c.source_probe_id IS NOT NULL
                    THEN 'dataset' ELSE 'generated' END AS source
        FROM curated_items i
        LEFT JOIN candidates c ON c.candidate_id = i.candidate_id
        LEFT JOIN probes p ON p.probe_id = i.candidate_id
        WHERE i.set_id = ? AND i.role = 'eval'
        ORDER BY i.fact_id, source, i.kind, i.candidate_id
        """,
        [set_id],
    )


def set_facts(store: Store, set_id: str, extra_fact_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The facts of a set: those with a kept item, plus ``extra_fact_ids`` (facts below the minimum)."""
    with store.temporary_view({"fact_id": pa.array(list(extra_fact_ids), pa.string())}, "facts") as view:
        return store.query(
            f"""
            SELECT f.fact_id, f.question, f.answer, f.key_span, f.subject
            FROM facts f
            WHERE f.fact_id IN (SELECT fact_id FROM curated_items WHERE set_id = ?)
               OR f.fact_id IN (SELECT fact_id FROM "{view}")
            ORDER BY f.fact_id
            """,
            [set_id],
        )


def score_histograms(store: Store, set_id: str, bins: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Per scorer, a histogram of the kept candidates' values over [min, max] in ``bins`` bins."""
    rows = store.query(
        f"""
        WITH kept AS (
            SELECT s.* FROM curated_items i JOIN v_candidate_scores s ON s.candidate_id = i.candidate_id
            WHERE i.set_id = ?
        ), vals AS (
            UNPIVOT kept ON similarity, answer_leak, contradiction, fluency, duplicate, quality
            INTO NAME scorer VALUE value
        ), bounds AS (SELECT scorer, min(value) AS lo, max(value) AS hi FROM vals GROUP BY scorer)
        SELECT v.scorer, b.lo, b.hi,
               least({bins - 1}, CASE WHEN b.hi > b.lo THEN floor((v.value - b.lo) / (b.hi - b.lo) * {bins})
                                      ELSE 0 END)::INTEGER AS bin,
               count(*) AS n
        FROM vals v JOIN bounds b USING (scorer)
        GROUP BY ALL ORDER BY v.scorer, bin
        """,
        [set_id],
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        width = (r["hi"] - r["lo"]) / bins if r["hi"] > r["lo"] else 0.0
        out.setdefault(r["scorer"], []).append(
            {
                "low": r["lo"] + r["bin"] * width,
                "high": r["lo"] + (r["bin"] + 1) * width if width else r["hi"],
                "n": r["n"],
            }
        )
    return out


def parse_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
