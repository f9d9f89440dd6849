"""GUR (general utility retention): recall on the retained sets after unlearning over the base
model's, per set and on average (probe set ``all``)."""

from __future__ import annotations

from collections.abc import Mapping

from lune.core.models import BASE_LABEL
from lune.evaluation.metrics.registry import MetricContext, MetricRows, metric
from lune.evaluation.metrics.result import MetricResult, mean
from lune.evaluation.metrics.usr import recall
from lune.evaluation.outputs import ModelOutputs
from lune.evaluation.probes import FORGET_SETS


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
    return MetricResult(mean(values), values, len(values), {"per_set": per_set, "skipped_sets": skipped})


def _recall_per_set(ctx: MetricContext, out: ModelOutputs) -> dict[str, float | None]:
    """The model's recall on every retained set that has probes."""
    return {
        name: recall(ctx.generations(out, name), [p.key_span for p in probes], **ctx.key_options).value
        for name, probes in ctx.probe_sets()
        if name not in FORGET_SETS
    }


@metric("gur")
def gur_rows(ctx: MetricContext) -> MetricRows:
    """``gur`` of every unlearned model against the base model (``outputs[0]``): overall (``all``)
    and per retained set."""
    rows = MetricRows()
    base = _recall_per_set(ctx, ctx.outputs[0])
    for out in ctx.outputs:
        if out.spec.label == BASE_LABEL:
            continue
        result = gur(_recall_per_set(ctx, out), base)
        rows.results.append(ctx.result(out, "all", "gur", result))
        for name, ratio in result.detail["per_set"].items():
            rows.results.append(ctx.result(out, name, "gur", ratio, n=len(ctx.suite.probes.get(name, []))))
    return rows
