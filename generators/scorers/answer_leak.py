"""`answer_leak`: does a candidate still state the fact's key answer span?

1.0 when the span occurs as whole tokens (``evaluation.matching.contains_span``: normalised and
token-aware, so "Kuwaiti" does not state "Kuwait"); otherwise the share of the span's content words
the candidate contains, as whole tokens. The partial value catches restatements that reorder or
split a long span ("part of the LGBTQ+ community" -> "associates with the LGBTQ+ spectrum").

Computed for every kind: a negative that leaks teaches the fact again, and a paraphrase or attack
that contains the answer gives it away to the model under test.
"""

from __future__ import annotations

from typing import Any

from lune.core.matching import contains_span, normalize
from lune.generators.config import ScoreConfig
from lune.generators.scorers.base import Score, Scorer

# Function words never count as content of a span (a negative may say "the" and "of").
FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "nor",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "as",
        "into",
        "onto",
        "upon",
        "about",
        "over",
        "under",
        "after",
        "before",
        "during",
        "between",
        "through",
        "within",
        "without",
        "is",
        "am",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "has",
        "have",
        "had",
        "do",
        "does",
        "did",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "i",
        "me",
        "my",
        "we",
        "us",
        "our",
        "you",
        "your",
        "he",
        "him",
        "his",
        "she",
        "her",
        "they",
        "them",
        "their",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "who",
        "whom",
        "whose",
        "which",
        "what",
        "when",
        "where",
        "why",
        "how",
        "not",
        "no",
        "s",
    ]
)


def content_tokens(text: str) -> list[str]:
    return list(dict.fromkeys(t for t in normalize(text) if t not in FUNCTION_WORDS))


def leak(text: str, key_span: str) -> tuple[float, dict[str, Any]]:
    """(value, detail) of one candidate against one key span."""
    if contains_span(text, key_span):
        return 1.0, {"exact": True}
    wanted = content_tokens(key_span)
    if not wanted:
        return 0.0, {"exact": False, "coverage": 0.0}
    present = set(normalize(text))
    found = [t for t in wanted if t in present]
    coverage = len(found) / len(wanted)
    detail: dict[str, Any] = {"exact": False, "coverage": round(coverage, 4)}
    if found:
        detail["found"] = found
    return coverage, detail


class AnswerLeak(Scorer):
    name = "answer_leak"

    @classmethod
    def version(cls, config: ScoreConfig) -> str:
        return "1"

    def score(self, rows: list[dict[str, Any]]) -> list[Score]:
        return [Score(row["candidate_id"], *leak(row["text"], row["key_span"])) for row in rows]
