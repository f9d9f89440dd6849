"""The shipped TOFU sample as facts and as a curated set in the export contract (data/export.py),
without the ingest, generation and curation stages: for the teach / unlearn tests and
``bench/unlearn.py``. The negatives are TOFU's own perturbed answers (real negatives: the same
sentence with the key fact replaced); key spans come from ``data.key_span`` as ingest derives them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lune.core.matching import contains_span
from lune.data.ids import content_id
from lune.data.key_span import key_span_for

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "tofu"  # shipped in the repository
FILES = {"forget": ["forget01.json"], "retain": ["retain99.json"], "utility": ["world_facts.json", "real_authors.json"]}


def _rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (SAMPLE / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def sample_facts(limits: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Facts of the sample (fact_id, question, answer, key_span, split), the first ``limits[split]``
    of each split (all when a split is not named; a split named with 0 is left out)."""
    limits = limits if limits is not None else {}
    facts = []
    for split, names in FILES.items():
        rows = [r for name in names for r in _rows(name)]
        rows = rows[: limits.get(split, len(rows))]
        for row in rows:
            dataset_span = row["answer"] if split == "utility" else None  # utility answers are the span
            span, _ = key_span_for(row["question"], row["answer"], dataset_span)
            facts.append(
                {
                    "fact_id": content_id("tofu", split, row["question"], row["answer"]),
                    "question": row["question"],
                    "answer": row["answer"],
                    "key_span": span,
                    "split": split,
                    "subject": None,
                }
            )
    return facts


def perturbed_rows() -> list[dict[str, Any]]:
    """TOFU's forget01 perturbations: rows ``question``, ``paraphrased_question``, ``perturbed_answer`` (a list)."""
    return _rows("forget01_perturbed.json")


def curated_set(
    facts: list[dict[str, Any]], negatives_per_fact: int = 5, paraphrases: bool = True, refusals: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """A curated set over the forget facts of ``facts``: each question with its perturbed answers as
    negatives, plus the paraphrased question paired with the first negative. A perturbed answer
    that still states the key span is no negative (TOFU changes another detail in some) and is left
    out, as curation's answer-leak scorer leaves it out."""
    forget = [f for f in facts if f["split"] == "forget"]
    by_question = {f["question"]: f for f in forget}
    train = []
    for row in perturbed_rows():
        fact = by_question.get(row["question"])
        if fact is None:
            continue
        negatives = [n for n in row["perturbed_answer"] if not contains_span(n, fact["key_span"])]
        for i, negative in enumerate(negatives[:negatives_per_fact]):
            train.append(
                {
                    "fact_id": fact["fact_id"],
                    "prompt": fact["question"],
                    "target": negative,
                    "target_kind": "negative",
                    "prompt_kind": "question",
                    "candidate_id": content_id("negative", fact["fact_id"], i),
                }
            )
        if paraphrases and negatives:
            train.append(
                {
                    "fact_id": fact["fact_id"],
                    "prompt": row["paraphrased_question"],
                    "target": negatives[0],
                    "target_kind": "negative",
                    "prompt_kind": "paraphrase",
                    "candidate_id": content_id("paraphrase", fact["fact_id"]),
                }
            )
        if refusals:
            train.append(
                {
                    "fact_id": fact["fact_id"],
                    "prompt": fact["question"],
                    "target": "I'm afraid I can't share anything about that.",
                    "target_kind": "refusal",
                    "prompt_kind": "question",
                    "candidate_id": content_id("refusal", fact["fact_id"]),
                }
            )
    return {
        "train": train,
        "eval": [],
        "forget": [{k: f[k] for k in ("fact_id", "question", "answer", "key_span", "subject")} for f in forget],
    }


def retain_of(facts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: f[k] for k in ("fact_id", "question", "answer", "key_span")} for f in facts if f["split"] == "retain"]
