"""Typed records: one class per kind of row that enters the store from outside.

Loaders validate their input and build these; the store receives ``record.to_row()`` dicts.
Ids are content hashes (``data.ids``), so the same fact read twice has the same id.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from lune.data.ids import content_id

# The attack families a probe or candidate may carry (RWKU level 3, Jin et al., 2024, section 3.3).
ATTACK_TYPES: tuple[str, ...] = (
    "prefix_injection",
    "affirmative_suffix",
    "role_play",
    "multiple_choice",
    "reverse_query",
    "synonym_manipulation",
    "context_hint",
    "in_context_learning",
    "cross_lingual",
)


def normalize_attack_type(name: str | None) -> str | None:
    """RWKU's labels ("incontext learning", "cross lingual (Spanish)") as our snake_case names."""
    if name is None:
        return None
    folded = re.sub(r"\(.*?\)", "", name).strip().casefold().replace("-", " ")
    folded = re.sub(r"\s+", "_", folded)
    return {"incontext_learning": "in_context_learning", "in_context": "in_context_learning"}.get(folded, folded)


Split = Literal["forget", "retain", "holdout", "utility"]
SPLITS: tuple[str, ...] = ("forget", "retain", "holdout", "utility")
# What a generated candidate is: a negative (a wrong answer to train on), a paraphrase of the
# question, an adversarial attack on it, or a refusal. The one list of kinds: configs type their
# fields with ``CandidateKind``; code iterates ``CANDIDATE_KINDS``.
CandidateKind = Literal["negative", "paraphrase", "attack", "refusal"]
CANDIDATE_KINDS: tuple[CandidateKind, ...] = get_args(CandidateKind)


@dataclass(frozen=True)
class Fact:
    """A question/answer pair to forget or to keep."""

    corpus: str
    source_file: str
    question: str
    answer: str
    key_span: str
    key_span_source: Literal["dataset", "derived", "user"]
    split: Split
    subject: str | None = None
    group_name: str | None = None
    source_line: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fact_id(self) -> str:
        return fact_id(self.corpus, self.question, self.answer)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["fact_id"] = self.fact_id
        row["extra"] = self.extra or None
        return row


def fact_id(corpus: str, question: str, answer: str) -> str:
    return content_id("fact", corpus, question, answer)


@dataclass(frozen=True)
class Probe:
    """A dataset-provided probe: a paraphrase, an adversarial query, a perturbed answer, an MIA text."""

    corpus: str
    kind: str
    text: str
    source_file: str
    fact_id: str | None = None
    subject: str | None = None
    answer: str | None = None
    attack_type: str | None = None
    source_line: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def probe_id(self) -> str:
        return content_id("probe", self.corpus, self.kind, self.fact_id or self.subject, self.text)

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["probe_id"] = self.probe_id
        row["extra"] = self.extra or None
        return row
