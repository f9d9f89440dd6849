"""Exact memorization (EM) and extraction strength (ES): how much of an answer the model still
reproduces under teacher forcing, i.e. with each answer token predicted from the question and the
true answer before it (open-unlearning's ``exact_memorization`` and ``extraction_strength``).

Both read one boolean per answer token, ``m_t = [a_t = argmax_z p(z | q, a_<t)]``, computed in the
same forward pass as the answer's likelihood (``core/likelihood.py``), over the answer's own tokens:
the EOS that the likelihood scores (``EvaluateConfig.score_eos``) is left out here, as
open-unlearning's ``tokenwise_logprobs`` leaves it out. Reported on the TOFU forget items (and the
retain items, for reference) of every model.

    >>> exact_memorization([True, False, True, True])
    0.75
    >>> extraction_strength([True, False, True, True])
    0.5
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lune.evaluation.metrics.registry import MetricContext, MetricRows, metric
from lune.evaluation.metrics.result import MetricResult
from lune.evaluation.outputs import ModelOutputs

# The TOFU groups reported: the forget set, and the retain set as the reference of what a model knows.
GROUPS = ("forget", "retain")


def exact_memorization(is_argmax: Sequence[bool]) -> float | None:
    """Share of answer tokens that are the teacher-forced argmax: ``EM = (1/n) sum_t m_t`` over the
    ``n`` answer tokens. None for an empty answer."""
    return sum(bool(m) for m in is_argmax) / len(is_argmax) if len(is_argmax) else None


def extraction_strength(is_argmax: Sequence[bool]) -> float | None:
    """``ES = 1 - k*/n``, with ``k*`` the shortest prefix of the answer (in tokens) after which every
    remaining token is the teacher-forced argmax: ``k* = min{k in 0..n : m_t for all t >= k}``. So
    ``k* = 0`` (ES 1) when the whole answer is greedy, ``k* = j + 1`` for ``j`` the last token that
    is not, and ``k* = n`` (ES 0) when even the last token is wrong. None for an empty answer.

    (open-unlearning's loop leaves ``k* = n - 1`` when no suffix matches, i.e. ES ``1/n`` instead of 0.)
    """
    n = len(is_argmax)
    if not n:
        return None
    misses = [t for t, m in enumerate(is_argmax) if not m]
    k_star = misses[-1] + 1 if misses else 0
    return 1.0 - k_star / n


def mean_over_answers(
    answers: Sequence[Sequence[bool]], score: Callable[[Sequence[bool]], float | None]
) -> MetricResult:
    """``(1/N) sum_i score(m_i)`` over the ``N`` answers with at least one scored token (empty ones,
    e.g. never scored, are left out and counted in ``detail['skipped']``)."""
    values = [v for v in (score(a) for a in answers) if v is not None]
    return MetricResult.mean_of(values, {"skipped": len(answers) - len(values)})


def _scored(out: ModelOutputs | None, group: str) -> list[list[bool]]:
    """The per-token greedy matches of the model's answers of a TOFU group; empty when never scored."""
    answers = [t.answer_is_argmax for t in out.truth.get(group, [])] if out is not None else []
    return answers if any(answers) else []


@metric("memorization")
def memorization_rows(ctx: MetricContext) -> MetricRows:
    """``exact_memorization`` and ``extraction_strength`` of every model on ``tofu_forget`` and
    ``tofu_retain`` (each row's ``detail['retain_model']``: the retain model's value on the forget
    items, the reference a model that never saw them gives)."""
    rows = MetricRows()
    scores = {"exact_memorization": exact_memorization, "extraction_strength": extraction_strength}
    reference = _scored(ctx.retain, "forget")
    for out in ctx.outputs:
        for group in GROUPS:
            answers = _scored(out, group)
            if not answers:
                continue
            for name, score in scores.items():
                detail = None
                if group == "forget" and reference:
                    detail = {"retain_model": mean_over_answers(reference, score).value}
                rows.results.append(
                    ctx.result(out, f"tofu_{group}", name, mean_over_answers(answers, score), detail=detail)
                )
    return rows
