"""The labelled check of the default scorers on TOFU: is the keep verdict a "valid negative" detector?

In TOFU's ``*_perturbed.json`` files each row has a ``perturbed_answer`` list (the benchmark's own
wrong answers: the key facts replaced, a valid negative of the question) and a
``paraphrased_answer`` (the true answer reworded: not a negative, it restates the fact). Every one is
stored as a negative candidate of its fact, scored, and judged by the policy; then

    precision = kept perturbed / all kept        recall = kept perturbed / all perturbed

Used by tests/test_tofu_labelled.py (a pinned lower bound) and bench/score.py (BENCHMARKS.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lune.data.ids import content_id
from lune.data.key_span import key_span_for
from lune.data.records import Fact
from lune.data.store import Store
from lune.generators.config import CurateConfig, ScoreConfig
from lune.generators.curation import decide
from lune.generators.scorers import run_scorers

CHECK_SET = "labelled-check"


def load_labelled(path: str | Path, limit: int | None = None) -> tuple[list[dict], list[dict], dict[str, int]]:
    """(fact rows, candidate rows, {candidate_id: 1 valid negative / 0 restatement}) of a TOFU file."""
    path = Path(path)
    facts, candidates, labels = [], [], {}
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for number, line in enumerate(lines[:limit] if limit else lines, start=1):
        row = json.loads(line)
        key_span, source = key_span_for(row["question"], row["answer"])
        fact = Fact(
            corpus="tofu-check",
            source_file=path.name,
            source_line=number,
            question=row["question"],
            answer=row["answer"],
            key_span=key_span,
            key_span_source=source,
            split="forget",
        )
        facts.append(fact.to_row())
        texts = [(t, 1, "perturbed_answer") for t in row["perturbed_answer"]]
        texts.append((row["paraphrased_answer"], 0, "paraphrased_answer"))
        for text, label, strategy in texts:
            cid = content_id(fact.fact_id, "negative", text, "dataset", None, strategy, None)
            candidates.append(
                {
                    "candidate_id": cid,
                    "fact_id": fact.fact_id,
                    "kind": "negative",
                    "text": text,
                    "generator": "dataset",
                    "strategy": f"dataset:{strategy}",
                }
            )
            labels[cid] = label
    return facts, candidates, labels


def precision_recall(verdicts: dict[str, bool], labels: dict[str, int]) -> dict[str, Any]:
    tp = sum(1 for cid, keep in verdicts.items() if keep and labels[cid] == 1)
    fp = sum(1 for cid, keep in verdicts.items() if keep and labels[cid] == 0)
    fn = sum(1 for cid, keep in verdicts.items() if not keep and labels[cid] == 1)
    kept = tp + fp
    return {
        "precision": tp / kept if kept else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": len(verdicts) - tp - fp - fn,
        "n": len(verdicts),
    }


def run_check(
    store: Store,
    path: str | Path,
    *,
    score_config: ScoreConfig | None = None,
    curate_config: CurateConfig | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Load, score and judge the file; precision / recall of the keep verdict and the drop reasons."""
    score_config = score_config or ScoreConfig()
    curate_config = curate_config or CurateConfig()
    facts, candidates, labels = load_labelled(path, limit)
    store.insert("facts", facts)
    store.insert("candidates", candidates)
    run_scorers(store, score_config)
    decide(store, CHECK_SET, curate_config, score_config)
    rows = store.query("SELECT candidate_id, keep, reason FROM candidate_verdicts WHERE set_id = ?", [CHECK_SET])
    verdicts = {r["candidate_id"]: bool(r["keep"]) for r in rows if r["candidate_id"] in labels}
    result = precision_recall(verdicts, labels)
    reasons: dict[str, dict[str, int]] = {"valid": {}, "restatement": {}}
    for r in rows:
        if r["candidate_id"] in labels and not r["keep"]:
            side = reasons["valid" if labels[r["candidate_id"]] else "restatement"]
            side[r["reason"]] = side.get(r["reason"], 0) + 1
    result["drop_reasons"] = reasons
    return result
