"""The metric registry: every metric family of ``evaluation/metrics/`` by name, and the one function
that runs them all on a probe suite's outputs.

A family is a function of a :class:`MetricContext` (the probes, every model's answers and
likelihoods, the settings) returning :class:`MetricRows`: its ``eval_results`` rows (aggregates)
and ``eval_items`` rows (one per probe and model). It registers itself with ``@metric(name)``; a
module of this package that defines one is found by :func:`registered`, so adding a metric is adding
one file, e.g. ``evaluation/metrics/answer_length.py``:

    @metric("answer_length")
    def answer_length(ctx: MetricContext) -> MetricRows:
        # the mean number of words of the answers, per model and probe set
        rows = MetricRows()
        for out in ctx.outputs:
            for name, _ in ctx.probe_sets():
                lengths = [float(len(g.split())) for g in ctx.generations(out, name)]
                rows.results.append(ctx.result(out, name, "answer_length", MetricResult.mean_of(lengths)))
        return rows

The families are independent: one that needs another's number (GUR needs recall) computes it with
the other module's pure function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lune.core.models import BASE_LABEL, ModelSpec
from lune.core.registry import Registry
from lune.data.ids import content_id
from lune.evaluation.config import EvaluateConfig
from lune.evaluation.metrics.result import MetricResult
from lune.evaluation.outputs import ModelOutputs
from lune.evaluation.probes import PROBE_SETS, EvalProbe, ProbeSuite

Row = dict[str, Any]


@dataclass
class MetricRows:
    """What a metric family returns: ``eval_results`` rows and ``eval_items`` rows."""

    results: list[Row] = field(default_factory=list)
    items: list[Row] = field(default_factory=list)


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or None when it is None, NaN or infinite (a stored number is finite)."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class MetricContext:
    """Everything a metric family reads: the probe suite and what every model produced on it.

    ``outputs[0]`` is the base model (GUR divides by its recall, the MIA threshold is fitted on
    its scores); ``retain`` is the retain model's TOFU likelihoods on the forget items and its MIA
    scores, if any.
    """

    run_id: str
    suite: ProbeSuite
    outputs: Sequence[ModelOutputs]
    retain: ModelOutputs | None
    config: EvaluateConfig

    @property
    def key_options(self) -> dict[str, Any]:
        """The settings of :func:`lune.evaluation.metrics.usr.states_key`."""
        return {"long_span_tokens": self.config.long_span_tokens, "coverage_threshold": self.config.coverage_threshold}

    def probe_sets(self) -> Iterator[tuple[str, list[EvalProbe]]]:
        """``(name, probes)`` of every probe set that has probes, in ``PROBE_SETS`` order."""
        for name in PROBE_SETS:
            probes = self.suite.probes.get(name, [])
            if probes:
                yield name, probes

    @staticmethod
    def generations(out: ModelOutputs, name: str) -> list[str]:
        """The model's answers to probe set ``name`` (aligned with its probes)."""
        return out.generations.get(name, [])

    def result(
        self,
        out: ModelOutputs | ModelSpec,
        probe_set: str,
        metric: str,
        result: MetricResult | float | None,
        n: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Row:
        """One ``eval_results`` row: a :class:`MetricResult` (its value, n and detail, merged with
        ``detail``) or a plain value; a non-finite value is stored as NULL."""
        spec = out.spec if isinstance(out, ModelOutputs) else out
        if isinstance(result, MetricResult):
            value, n, detail = result.value, result.n, {**result.detail, **(detail or {})}
        else:
            value = result
        return {
            "result_id": content_id(self.run_id, spec.label, probe_set, metric),
            "run_id": self.run_id,
            "model_label": spec.label,
            "method": spec.method,
            "probe_set": probe_set,
            "metric": metric,
            "value": finite_or_none(value),
            "n": n,
            "detail": dict(detail) if detail else None,
        }

    def item(self, spec: ModelSpec, probe_set: str, probe_id: str, **fields: Any) -> Row:
        """One ``eval_items`` row: one probe (or text, or TOFU item) and one model."""
        return {
            "item_id": content_id(self.run_id, spec.label, probe_set, probe_id),
            "run_id": self.run_id,
            "model_label": spec.label,
            "method": spec.method,
            "probe_set": probe_set,
            "probe_id": probe_id,
            **fields,
        }


MetricFamily = Callable[[MetricContext], MetricRows]
# Filled by the modules of this package as they are imported (``@metric(name)``).
FAMILIES: Registry[MetricFamily] = Registry("metric family", __name__.rpartition(".")[0])
metric = FAMILIES.register


def registered() -> dict[str, MetricFamily]:
    """Every metric family, sorted by name (importing each module of this package registers the
    families it defines)."""
    return FAMILIES.entries()


def compute_results(
    run_id: str, suite: ProbeSuite, outputs: Sequence[ModelOutputs], retain: ModelOutputs | None, config: EvaluateConfig
) -> tuple[list[Row], list[Row]]:
    """Metric rows (``eval_results``) and per-probe rows (``eval_items``) of every registered family
    for every model; ``outputs[0]`` must be the base model."""
    if not outputs or outputs[0].spec.label != BASE_LABEL:
        raise ValueError("compute_results needs the base model's outputs first")
    context = MetricContext(run_id, suite, outputs, retain, config)
    results: list[Row] = []
    items: list[Row] = []
    for family in registered().values():
        rows = family(context)
        results += rows.results
        items += rows.items
    return results, items
