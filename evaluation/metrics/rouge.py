"""ROUGE-L recall of each greedy answer against the dataset's answer (as TOFU computes it), per
probe set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lune.evaluation.metrics.registry import MetricContext, MetricRows, metric
from lune.evaluation.metrics.result import MetricResult, check_lengths

_SCORER: Any = None


def rouge_l_recall(generations: Sequence[str], references: Sequence[str]) -> MetricResult:
    """ROUGE-L recall of each generation against its reference answer (``rouge_score`` with the
    Porter stemmer, as TOFU computes it), and the mean:
    ``R_LCS(g, r) = LCS(g, r) / |r|`` over stemmed tokens."""
    global _SCORER
    check_lengths(generations, references)
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return MetricResult.mean_of([_SCORER.score(ref, gen)["rougeL"].recall for gen, ref in zip(generations, references)])


@metric("rouge_l_recall")
def rouge_l_recall_per_set(ctx: MetricContext) -> MetricRows:
    """``rouge_l_recall`` of every model on every probe set."""
    rows = MetricRows()
    for out in ctx.outputs:
        for name, probes in ctx.probe_sets():
            result = rouge_l_recall(ctx.generations(out, name), [p.answer for p in probes])
            rows.results.append(ctx.result(out, name, "rouge_l_recall", result))
    return rows
