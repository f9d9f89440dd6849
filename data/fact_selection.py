"""Which facts a pipeline works on: the facts set aside before generation, and why.

Two reasons to leave a fact out, both decided by the pipeline's ``select`` step (``flows/select.py``,
whose ``SelectConfig`` is the ``select:`` section):

- the model does not answer it (the knowledge probe, ``evaluation/knowledge_probe.py``): unlearning
  a fact a model never knew measures nothing, and a neighbour fact it never knew cannot show
  collateral damage;
- a cap on the facts per split (``select.max_facts``), to size a run to a time budget: the first
  facts in source order are kept (TOFU and RWKU files list a subject's facts together, so whole
  authors / targets are kept first).

A fact set aside keeps its row; its ``split`` becomes ``set_aside``, which no stage reads, and a
``fact_selection`` row records its original split, the reason, and the probe's answers. Every
selection first restores the facts the previous one set aside in the same corpora, so changing the
threshold or the model starts from every fact again.

    >>> with Store.open("lune.duckdb") as store:
    ...     facts = selectable_facts(store, ["rwku-smollm2"], ["forget", "retain"])
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lune.data.store import Store

SET_ASIDE = "set_aside"
FACT_COLUMNS = "fact_id, corpus, subject, question, answer, key_span, split, group_name, source_file, source_line"


@dataclass(frozen=True)
class Decision:
    """What the selection decided for one fact."""

    fact_id: str
    split: str  # the fact's split before selection
    keep: bool
    reason: str  # kept / unknown / key_in_question / over_cap
    model: str | None = None
    answers: tuple[str, ...] = ()
    score: float | None = None

    def to_row(self, run_id: str) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "fact_id": self.fact_id,
            "split": self.split,
            "keep": self.keep,
            "reason": self.reason,
            "model": self.model,
            "answers": json.dumps(list(self.answers), ensure_ascii=False) if self.answers else None,
            "score": self.score,
        }


def cap_facts(facts: Sequence[Mapping[str, Any]], max_facts: Mapping[str, int]) -> set[str]:
    """Ids of the facts beyond their cap. A cap is named by a group (``group_name``, e.g. TOFU's
    ``real_authors``) or a split; a fact whose group has a cap counts against it, else against its
    split's. Within each cap the first facts in source order (source file, then line) are kept;
    facts with no cap are all kept."""
    capped: dict[str, list[Mapping[str, Any]]] = {}
    for fact in facts:
        key = fact.get("group_name") if fact.get("group_name") in max_facts else fact["split"]
        if key in max_facts:
            capped.setdefault(key, []).append(fact)
    over: set[str] = set()
    for key, chosen in capped.items():
        chosen.sort(key=lambda f: (f.get("source_file") or "", f.get("source_line") or 0, f["fact_id"]))
        over.update(f["fact_id"] for f in chosen[max_facts[key] :])
    return over


def restore_set_aside(store: Store, corpora: Sequence[str]) -> int:
    """Give the facts of ``corpora`` that a selection set aside their original split back; return how many."""
    if not corpora:
        return 0
    rows = store.query(
        "SELECT s.fact_id, s.split FROM facts f JOIN ("
        "  SELECT fact_id, split FROM fact_selection"
        "  QUALIFY row_number() OVER (PARTITION BY fact_id ORDER BY created_at DESC, run_id) = 1"
        ") s USING (fact_id) WHERE f.split = ? AND f.corpus IN (SELECT unnest(?::VARCHAR[]))",
        [SET_ASIDE, list(corpora)],
    )
    if not rows:
        return 0
    with store.temporary_view(
        {"fact_id": [r["fact_id"] for r in rows], "split": [r["split"] for r in rows]}, "restore"
    ) as view:
        store.execute(f'UPDATE facts SET split = v.split FROM "{view}" v WHERE facts.fact_id = v.fact_id')
    return len(rows)


def selectable_facts(store: Store, corpora: Sequence[str], splits: Sequence[str]) -> list[dict[str, Any]]:
    """The facts of ``corpora`` in ``splits``, after restoring the ones a previous selection set
    aside, in source order."""
    restore_set_aside(store, corpora)
    return store.query(
        f"SELECT {FACT_COLUMNS} FROM facts WHERE corpus IN (SELECT unnest(?::VARCHAR[])) "
        "AND split IN (SELECT unnest(?::VARCHAR[])) ORDER BY source_file, source_line, fact_id",
        [list(corpora), list(splits)],
    )


def record_selection(store: Store, run_id: str, decisions: Sequence[Decision]) -> dict[str, int]:
    """Write the decisions and set aside the facts not kept, in one transaction (a rerun of the same
    run replaces its rows). Returns counts per reason."""
    with store.transaction():
        store.execute("DELETE FROM fact_selection WHERE run_id = ?", [run_id])
        store.insert("fact_selection", [d.to_row(run_id) for d in decisions])
        dropped = [d.fact_id for d in decisions if not d.keep]
        if dropped:
            store.execute(
                "UPDATE facts SET split = ? WHERE fact_id IN (SELECT unnest(?::VARCHAR[]))", [SET_ASIDE, dropped]
            )
    counts: dict[str, int] = {}
    for d in decisions:
        key = f"{d.split}_{d.reason}"
        counts[key] = counts.get(key, 0) + 1
    return counts
