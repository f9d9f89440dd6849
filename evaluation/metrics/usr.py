"""Metrics as pure functions: each takes plain values (generations, spans, log-probabilities) and
returns a :class:`MetricResult` with the aggregate and one value per item.

No model, no store and no I/O in here: ``evaluation/evaluate.py`` produces the inputs, and
``docs/evaluation.md`` gives every formula with its source. The TOFU metrics are in
``evaluation/tofu_metrics.py``, the membership-inference scores in ``evaluation/mia.py``.

    >>> usr(["I don't know."], ["Basil Mahfouz Al-Kuwaiti"]).value
    1.0
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lune.core.matching import contains_span, normalize, span_coverage, span_tokens

# A key span longer than this many normalised tokens is a "long answer": an exact match rarely
# survives rewording, so key-content coverage decides instead (see `states_key`).
LONG_SPAN_TOKENS = 8
# Coverage at or above which a long answer still counts as stated.
COVERAGE_THRESHOLD = 0.5


@dataclass(frozen=True)
class MetricResult:
    """An aggregate ``value`` over ``n`` items, the ``per_item`` values it was computed from (same
    order as the input), and a ``detail`` dict of whatever else explains it (sub-aggregates,
    thresholds). ``value`` is ``None`` when there is nothing to measure (``n == 0``)."""

    value: float | None
    per_item: list[float] = field(default_factory=list)
    n: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# -- does a generation state the key? ----------------------------------------------------------


def is_long_span(key_span: str, long_span_tokens: int = LONG_SPAN_TOKENS) -> bool:
    """True when ``key_span`` has more than ``long_span_tokens`` normalised tokens."""
    return len(span_tokens(key_span)) > long_span_tokens


def key_score(generation: str, key_span: str, *, long_span_tokens: int = LONG_SPAN_TOKENS) -> float:
    """How much of the key a generation states: 1.0 / 0.0 for a short span (whole-token match after
    normalisation, :func:`evaluation.matching.contains_span`), the key-content coverage in [0, 1]
    for a long one (:func:`evaluation.matching.span_coverage`)."""
    if is_long_span(key_span, long_span_tokens):
        return span_coverage(generation, key_span)
    return 1.0 if contains_span(generation, key_span) else 0.0


def states_key(generation: str, key_span: str, *, long_span_tokens: int = LONG_SPAN_TOKENS,
               coverage_threshold: float = COVERAGE_THRESHOLD) -> bool:
    """True when ``generation`` still states ``key_span`` (short span: contained; long span:
    coverage >= ``coverage_threshold``)."""
    score = key_score(generation, key_span, long_span_tokens=long_span_tokens)
    if is_long_span(key_span, long_span_tokens):
        return score >= coverage_threshold
    return score == 1.0


def _check_lengths(*columns: Sequence[Any]) -> int:
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        raise ValueError(f"inputs of a metric must have the same length, got {sorted(lengths)}")
    return lengths.pop() if lengths else 0


# -- USR, recall, GUR, APR ---------------------------------------------------------------------


def usr(generations: Sequence[str], key_spans: Sequence[str], *, long_span_tokens: int = LONG_SPAN_TOKENS,
        coverage_threshold: float = COVERAGE_THRESHOLD) -> MetricResult:
    """Unlearning success rate: the share of probes whose generation no longer states the key span.

    ``USR = (1/N) * sum_i [not states_key(g_i, k_i)]``; per item 1.0 (forgotten) or 0.0 (leaked).
    """
    n = _check_lengths(generations, key_spans)
    per_item = [0.0 if states_key(g, k, long_span_tokens=long_span_tokens, coverage_threshold=coverage_threshold)
                else 1.0 for g, k in zip(generations, key_spans)]
    long_items = sum(is_long_span(k, long_span_tokens) for k in key_spans)
    return MetricResult(_mean(per_item), per_item, n, {"long_span_items": long_items, "leaked": n - int(sum(per_item))})


def recall(generations: Sequence[str], key_spans: Sequence[str], *, long_span_tokens: int = LONG_SPAN_TOKENS,
           coverage_threshold: float = COVERAGE_THRESHOLD) -> MetricResult:
    """Share of probes whose generation states the key span: ``1 - USR`` on the same items.
    Used for retained knowledge (retain, neighbor, utility probes)."""
    forgotten = usr(generations, key_spans, long_span_tokens=long_span_tokens, coverage_threshold=coverage_threshold)
    per_item = [1.0 - v for v in forgotten.per_item]
    return MetricResult(_mean(per_item), per_item, forgotten.n, {"long_span_items": forgotten.detail["long_span_items"]})


def gur(recall_after: Mapping[str, float | None], recall_before: Mapping[str, float | None]) -> MetricResult:
    """General utility retention: recall after unlearning over recall before, per probe set, and
    their unweighted mean over the sets the base model answers at all.

    ``GUR_s = R_after(s) / R_before(s)`` (sets with ``R_before(s) = 0`` or missing are skipped:
    nothing was there to retain); ``GUR = mean_s GUR_s``. ``per_item`` holds the ``GUR_s`` in
    sorted set order; ``detail['per_set']`` maps each set to its ratio.
    """
    per_set: dict[str, float] = {}
    skipped = []
    for name in sorted(recall_before):
        before, after = recall_before.get(name), recall_after.get(name)
        if before is None or after is None or before <= 0:
            skipped.append(name)
            continue
        per_set[name] = after / before
    values = list(per_set.values())
    return MetricResult(_mean(values), values, len(values), {"per_set": per_set, "skipped_sets": skipped})


def apr(generations: Sequence[str], key_spans: Sequence[str], attack_types: Sequence[str | None], *,
        long_span_tokens: int = LONG_SPAN_TOKENS, coverage_threshold: float = COVERAGE_THRESHOLD) -> MetricResult:
    """Adversarial paraphrase robustness: USR on paraphrase and attack probes, overall and per
    attack type (``None`` types count as ``paraphrase``).

    ``APR = USR(paraphrase ∪ attack probes)``; ``detail['per_type'][t] = USR(probes of type t)``
    with ``detail['n_per_type'][t]`` probes.
    """
    _check_lengths(generations, key_spans, attack_types)
    overall = usr(generations, key_spans, long_span_tokens=long_span_tokens, coverage_threshold=coverage_threshold)
    groups: dict[str, list[float]] = {}
    for value, kind in zip(overall.per_item, attack_types):
        groups.setdefault(kind or "paraphrase", []).append(value)
    per_type = {kind: sum(v) / len(v) for kind, v in sorted(groups.items())}
    return MetricResult(overall.value, overall.per_item, overall.n,
                        {"per_type": per_type, "n_per_type": {k: len(v) for k, v in sorted(groups.items())}})


# -- fluency -----------------------------------------------------------------------------------


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """Weighted n-gram entropy (bits) of one text, as in ROME (Meng et al., 2022,
    ``compute_n_gram_entropy``): ``mean_n w_n * H_n`` with ``H_n = -sum_g f(g) log2 f(g)`` over the
    text's n-grams of normalised tokens. A text with no n-gram of some order contributes 0 for it."""
    tokens = normalize(text)
    parts = []
    for n, weight in zip(ns, weights):
        grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        total = sum(grams.values())
        entropy = -sum((c / total) * math.log2(c / total) for c in grams.values()) if total else 0.0
        parts.append(weight * entropy)
    return sum(parts) / len(parts) if parts else 0.0


def fluency(generations: Sequence[str], **kwargs: Any) -> MetricResult:
    """Mean weighted n-gram entropy of the generations: low values flag degenerate, repetitive output
    (a model that unlearned by collapsing), high ones varied text."""
    per_item = [ngram_entropy(g, **kwargs) for g in generations]
    return MetricResult(_mean(per_item), per_item, len(per_item))


# -- ROUGE-L -----------------------------------------------------------------------------------

_ROUGE = None


def rouge_l_recall(generations: Sequence[str], references: Sequence[str]) -> MetricResult:
    """ROUGE-L recall of each generation against its reference answer (``rouge_score`` with the
    Porter stemmer, as TOFU computes it), and the mean."""
    global _ROUGE
    n = _check_lengths(generations, references)
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    per_item = [_ROUGE.score(ref, gen)["rougeL"].recall for gen, ref in zip(generations, references)]
    return MetricResult(_mean(per_item), per_item, n)


def harmonic_mean(values: Sequence[float]) -> float | None:
    """Harmonic mean; 0.0 when any value is 0 (as scipy's hmean would after its warning), None when empty."""
    if not values:
        return None
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)
