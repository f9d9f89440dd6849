"""Word n-gram entropy of the generations: how varied the answers' wording is. Low values flag
degenerate, repetitive output (a model that unlearned by collapsing into loops), high ones varied
text. (Not the ``fluency`` scorer of ``generators/scorers``, which judges candidate texts.)"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from lune.core.matching import normalize
from lune.evaluation.metrics.registry import MetricContext, MetricRows, metric
from lune.evaluation.metrics.result import MetricResult


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """Weighted n-gram entropy (bits) of one text, as in ROME (Meng et al., 2022,
    ``compute_n_gram_entropy``): ``mean_n w_n * H_n`` with ``H_n = -sum_g f(g) log2 f(g)`` over the
    text's n-grams of normalised word tokens. A text with no n-gram of some order contributes 0 for it."""
    tokens = normalize(text)
    parts = []
    for n, weight in zip(ns, weights):
        grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        total = sum(grams.values())
        entropy = -sum((c / total) * math.log2(c / total) for c in grams.values()) if total else 0.0
        parts.append(weight * entropy)
    return sum(parts) / len(parts) if parts else 0.0


def word_ngram_entropy(generations: Sequence[str]) -> MetricResult:
    """Mean :func:`ngram_entropy` of the generations (per item: each generation's)."""
    return MetricResult.mean_of([ngram_entropy(g) for g in generations])


@metric("word_ngram_entropy")
def word_ngram_entropy_per_set(ctx: MetricContext) -> MetricRows:
    """``word_ngram_entropy`` of every model on every probe set, and on all its answers together
    (probe set ``all``)."""
    rows = MetricRows()
    for out in ctx.outputs:
        every: list[str] = []
        for name, _ in ctx.probe_sets():
            gens = ctx.generations(out, name)
            every += gens
            rows.results.append(ctx.result(out, name, "word_ngram_entropy", word_ngram_entropy(gens)))
        rows.results.append(ctx.result(out, "all", "word_ngram_entropy", word_ngram_entropy(every)))
    return rows
