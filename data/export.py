"""Export a curated set: the rows the unlearning and evaluation stages consume.

    >>> with Store.open("lune.duckdb") as store:
    ...     rows = curated_rows(store, "tofu-forget10")        # {"train": [...], "eval": [...], "forget": [...]}
    ...     export_set(store, "tofu-forget10", "runs/exports/tofu-forget10")

The contract (keep exactly these columns):

- ``train``: fact_id, prompt, target, target_kind ('negative' | 'refusal'),
  prompt_kind ('question' | 'paraphrase' | 'attack'), candidate_id. Each kept negative or refusal
  paired with its fact's original question (candidate_id: the target); then each train paraphrase
  or attack paired with one of the fact's kept negatives, round-robin in quality order (refusals
  when the fact has no kept negative; candidate_id: the prompt).
- ``eval``: fact_id, item_id, text, kind ('paraphrase' | 'attack'), attack_type,
  source ('generated' | 'dataset'): held-out prompts, never trained on.
- ``forget``: fact_id, question, answer, key_span, subject: every fact of the set, those below the
  policy's minimum included.

On disk: ``datasets.DatasetDict.save_to_disk(out/hf)``, ``out/parquet/{split}.parquet`` and a
dataset card ``out/README.md`` (policy, counts, score histograms).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from lune.data import curation_queries as q
from lune.data.errors import LuneError
from lune.data.store import Store

SPLIT_COLUMNS: dict[str, tuple[str, ...]] = {
    "train": ("fact_id", "prompt", "target", "target_kind", "prompt_kind", "candidate_id"),
    "eval": ("fact_id", "item_id", "text", "kind", "attack_type", "source"),
    "forget": ("fact_id", "question", "answer", "key_span", "subject"),
}


def resolve_set(store: Store, name: str, version: int | None = None) -> str:
    """The set id of curated set ``name`` (its latest version unless ``version``), or of a set id."""
    found = q.find_set(store, name, version)
    if found is None:
        known = ", ".join(f"{r['name']} (v{r['latest']})" for r in q.set_names(store)) or "none yet"
        which = f"{name!r} version {version}" if version is not None else repr(name)
        raise LuneError(f"no curated set {which}; sets in this store: {known}. Make one with `lune curate --name NAME`")
    return found["set_id"]


def set_info(store: Store, set_id: str) -> dict[str, Any]:
    row = q.find_set(store, set_id)
    if row is None:
        raise LuneError(f"no curated set with id {set_id!r}")
    row = dict(row)
    row["policy"] = q.parse_json(row["policy"])
    row["counts"] = q.parse_json(row["counts"]) or {}
    return row


def curated_rows(store: Store, set_name_or_id: str, version: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """The three splits of a curated set, straight from the store (see the module docstring)."""
    set_id = resolve_set(store, set_name_or_id, version)
    info = set_info(store, set_id)

    targets = q.set_targets(store, set_id)
    train: list[dict[str, Any]] = []
    negatives: dict[str, list[dict[str, Any]]] = {}
    refusals: dict[str, list[dict[str, Any]]] = {}
    for t in targets:
        train.append(
            {
                "fact_id": t["fact_id"],
                "prompt": t["question"],
                "target": t["text"],
                "target_kind": t["kind"],
                "prompt_kind": "question",
                "candidate_id": t["candidate_id"],
            }
        )
        (negatives if t["kind"] == "negative" else refusals).setdefault(t["fact_id"], []).append(t)
    turn: dict[str, int] = {}
    for p in q.set_train_prompts(store, set_id):
        pool = negatives.get(p["fact_id"]) or refusals.get(p["fact_id"])
        if not pool:
            continue  # no target to pair with: counted as unpaired_prompts in the card
        i = turn.get(p["fact_id"], 0)
        turn[p["fact_id"]] = i + 1
        target = pool[i % len(pool)]
        train.append(
            {
                "fact_id": p["fact_id"],
                "prompt": p["text"],
                "target": target["text"],
                "target_kind": target["kind"],
                "prompt_kind": p["kind"],
                "candidate_id": p["candidate_id"],
            }
        )

    eval_rows = [{k: r[k] for k in SPLIT_COLUMNS["eval"]} for r in q.set_eval_items(store, set_id)]
    below = [r["fact_id"] for r in info["counts"].get("below_minimum", [])]
    forget = [{k: r[k] for k in SPLIT_COLUMNS["forget"]} for r in q.set_facts(store, set_id, below)]
    return {"train": train, "eval": eval_rows, "forget": forget}


def _arrow(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pa.Table:
    return pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in columns})


def _histogram_text(hist: list[dict[str, Any]], width: int = 30) -> str:
    top = max((h["n"] for h in hist), default=0) or 1
    return "\n".join(
        f"  [{h['low']:7.3f}, {h['high']:7.3f})  {h['n']:>7}  {'#' * max(1, round(h['n'] / top * width))}" for h in hist
    )


def dataset_card(
    info: dict[str, Any], rows: dict[str, list[dict[str, Any]]], histograms: dict[str, list[dict[str, Any]]]
) -> str:
    counts = info["counts"]
    lines = [
        f"# Curated set `{info['name']}` version {info['version']}",
        "",
        "Made by lune (`lune curate`, `lune export`): negatives and refusals to train on, held-out",
        "evaluation prompts, and the facts to forget. Columns are the lune export contract (data/export.py).",
        "",
        f"- set id: `{info['set_id']}`",
        f"- created: {info['created_at']}",
        f"- contradiction scorer: {counts.get('contradiction', 'unknown')}",
        "",
        "## Rows",
        "",
        "| split | rows |",
        "|---|---|",
        *[f"| {split} | {len(rows[split])} |" for split in SPLIT_COLUMNS],
        "",
        "## Kept and dropped",
        "",
        "| kept (kind:role) | n |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(counts.get("kept", {}).items())],
        "",
        "| dropped (reason) | n |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in counts.get("dropped", {}).items()],
        "",
        f"Facts in scope: {counts.get('facts', len(rows['forget']))}; below the minimum of kept targets: "
        f"{len(counts.get('below_minimum', []))}.",
    ]
    below = counts.get("below_minimum", [])
    if below:
        lines += ["", "| fact below the minimum | kept targets | top drop reason | question |", "|---|---|---|---|"]
        lines += [
            f"| {b['fact_id']} | {b['kept_targets']} | {b.get('top_drop_reason') or ''} | "
            f"{(b.get('question') or '').replace('|', '/')[:80]} |"
            for b in below[:50]
        ]
        if len(below) > 50:
            lines.append(f"| ... {len(below) - 50} more (see curated_sets.counts) | | | |")
    lines += ["", "## Score histograms (kept candidates)", ""]
    for scorer, hist in sorted(histograms.items()):
        lines += [f"{scorer}:", "```", _histogram_text(hist), "```", ""]
    lines += ["## Policy", "", "```json", json.dumps(info["policy"], indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)


def export_set(store: Store, set_name_or_id: str, out_dir: str | Path, version: int | None = None) -> dict[str, Any]:
    """Write the set as a DatasetDict (``out/hf``), Parquet (``out/parquet``) and a card; return paths and counts."""
    import datasets
    import pyarrow.parquet as pq

    set_id = resolve_set(store, set_name_or_id, version)
    info = set_info(store, set_id)
    rows = curated_rows(store, set_id)
    out = Path(out_dir)
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise LuneError(
            f"{out}: the export writes a folder (hf/, parquet/, README.md), but {blocking} is a "
            "file; give --out a folder path (a new one is created), and the file is left as it is"
        )
    (out / "parquet").mkdir(parents=True, exist_ok=True)
    tables = {split: _arrow(rows[split], cols) for split, cols in SPLIT_COLUMNS.items()}
    for split, table in tables.items():
        pq.write_table(table, out / "parquet" / f"{split}.parquet")
    dsd = datasets.DatasetDict({split: datasets.Dataset(table) for split, table in tables.items()})
    dsd.save_to_disk(str(out / "hf"))
    card = dataset_card(info, rows, q.score_histograms(store, set_id))
    (out / "README.md").write_text(card, encoding="utf-8")
    return {
        "set_id": set_id,
        "name": info["name"],
        "version": info["version"],
        "out": str(out),
        "rows": {split: len(r) for split, r in rows.items()},
    }
