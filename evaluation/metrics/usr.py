"""USR and recall: does a generation still state the key answer span?

USR (unlearning success rate) on the forget sets (``forget``, ``paraphrase``, ``attack``): the share
of probes whose answer no longer states the key span; recall on the retained sets (``retain``,
``neighbor``, ``utility``): the share that still do. This family also writes one ``eval_items`` row
per probe and model with its verdict (``leaked`` / ``forgotten``, ``recalled`` / ``missed``).
Formulas with sources: ``docs/evaluation.md``.

    >>> usr(["I don't know."], ["Basil Mahfouz Al-Kuwaiti"]).value
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence

from lune.core.matching import contains_span, span_coverage, span_tokens
from lune.evaluation.metrics.registry import MetricContext, MetricRows, metric
from lune.evaluation.metrics.result import MetricResult, check_lengths, mean
from lune.evaluation.metrics.rouge import rouge_l_recall
from lune.evaluation.probes import FORGET_SETS

# A key span longer than this many normalised tokens is a "long answer": an exact match rarely
# survives rewording, so key-content coverage decides instead (see `states_key`).
LONG_SPAN_TOKENS = 8
# Coverage at or above which a long answer still counts as stated.
COVERAGE_THRESHOLD = 0.5


# -- does a generation state the key? ----------------------------------------------------------


def is_long_span(key_span: str, long_span_tokens: int = LONG_SPAN_TOKENS) -> bool:
    """True when ``key_span`` has more than ``long_span_tokens`` normalised tokens."""
    return len(span_tokens(key_span)) > long_span_tokens


def key_score(generation: str, key_span: str, *, long_span_tokens: int = LONG_SPAN_TOKENS) -> float:
    """How much of the key a generation states: 1.0 / 0.0 for a short span (whole-token match after
    normalisation, :func:`lune.core.matching.contains_span`), the key-content coverage in [0, 1]
    for a long one (:func:`lune.core.matching.span_coverage`)."""
    if is_long_span(key_span, long_span_tokens):
        return span_coverage(generation, key_span)
    return 1.0 if contains_span(generation, key_span) else 0.0


def states_key(
    generation: str,
    key_span: str,
    *,
    long_span_tokens: int = LONG_SPAN_TOKENS,
    coverage_threshold: float = COVERAGE_THRESHOLD,
) -> bool:
    """True when ``generation`` still states ``key_span`` (short span: contained; long span:
    coverage >= ``coverage_threshold``)."""
    score = key_score(generation, key_span, long_span_tokens=long_span_tokens)
    if is_long_span(key_span, long_span_tokens):
        return score >= coverage_threshold
    return score == 1.0


# -- USR, recall -------------------------------------------------------------------------------


def usr(
    generations: Sequence[str],
    key_spans: Sequence[str],
    *,
    long_span_tokens: int = LONG_SPAN_TOKENS,
    coverage_threshold: float = COVERAGE_THRESHOLD,
) -> MetricResult:
    """Unlearning success rate: the share of probes whose generation no longer states the key span.

    ``USR = (1/N) * sum_i [not states_key(g_i, k_i)]``; per item 1.0 (forgotten) or 0.0 (leaked).
    """
    n = check_lengths(generations, key_spans)
    per_item = [
        0.0 if states_key(g, k, long_span_tokens=long_span_tokens, coverage_threshold=coverage_threshold) else 1.0
        for g, k in zip(generations, key_spans)
    ]
    long_items = sum(is_long_span(k, long_span_tokens) for k in key_spans)
    return MetricResult(mean(per_item), per_item, n, {"long_span_items": long_items, "leaked": n - int(sum(per_item))})


def recall(
    generations: Sequence[str],
    key_spans: Sequence[str],
    *,
    long_span_tokens: int = LONG_SPAN_TOKENS,
    coverage_threshold: float = COVERAGE_THRESHOLD,
) -> MetricResult:
    """Share of probes whose generation states the key span: ``1 - USR`` on the same items.
    Used for retained knowledge (retain, neighbor, utility probes)."""
    forgotten = usr(generations, key_spans, long_span_tokens=long_span_tokens, coverage_threshold=coverage_threshold)
    per_item = [1.0 - v for v in forgotten.per_item]
    return MetricResult(mean(per_item), per_item, forgotten.n, {"long_span_items": forgotten.detail["long_span_items"]})


# -- the family: usr / recall rows and one verdict per probe ----------------------------------


def _verdict(probe_set: str, value: float) -> str:
    if probe_set in FORGET_SETS:
        return "leaked" if value == 0.0 else "forgotten"
    return "recalled" if value == 1.0 else "missed"


@metric("usr")
def usr_and_recall(ctx: MetricContext) -> MetricRows:
    """``usr`` on every forget set, ``recall`` on every retained set, per model; an item per probe."""
    rows = MetricRows()
    for out in ctx.outputs:
        for name, probes in ctx.probe_sets():
            gens = ctx.generations(out, name)
            spans = [p.key_span for p in probes]
            forget = name in FORGET_SETS
            judged = usr(gens, spans, **ctx.key_options) if forget else recall(gens, spans, **ctx.key_options)
            rows.results.append(ctx.result(out, name, "usr" if forget else "recall", judged))
            rouge = rouge_l_recall(gens, [p.answer for p in probes])
            for probe, gen, value, rl in zip(probes, gens, judged.per_item, rouge.per_item):
                rows.items.append(
                    ctx.item(
                        out.spec,
                        name,
                        probe.probe_id,
                        fact_id=probe.fact_id,
                        attack_type=probe.attack_type,
                        prompt=probe.question,
                        expected=probe.key_span,
                        generation=gen,
                        verdict=_verdict(name, value),
                        score=key_score(gen, probe.key_span, long_span_tokens=ctx.config.long_span_tokens),
                        detail={"rouge_l_recall": rl, "source": probe.source, "answer": probe.answer},
                    )
                )
    return rows
