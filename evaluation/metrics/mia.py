"""Membership inference: per-text scores from token log-probabilities, their AUC between forget
texts (members) and texts the model never saw (non-members), and LUNE's threshold accuracy.

Every score is oriented so that **higher means "looks like a training text"**; an AUC of 0.5 means
the forget texts are indistinguishable from unseen ones, which is what unlearning aims at.

- ``loss``: mean token log-likelihood, ``(1/T) sum_t log p(x_t | x_<t)`` (Yeom et al., 2018).
- ``zlib``: ``-NLL / zlib(x)``, the mean negative log-likelihood over the zlib-compressed length
  of the text in bytes (Carlini et al., 2021): texts that are merely easy (repetitive) are
  discounted.
- ``min_k``: mean of the k% lowest token log-likelihoods (Shi et al., 2024, Min-K% Prob): the
  ``max(1, floor(k * T))`` lowest of the ``T`` scored tokens (open-unlearning's ``int(len * k)``,
  k = 0.4 by default); ``rounding="ceil"`` is lune's old count ``max(1, ceil(k * T))``.
- ``min_k_plus_plus``: mean of the k% lowest standardised token log-likelihoods
  ``(log p(x_t) - mu_t) / sigma_t``, with ``mu_t`` and ``sigma_t`` the mean and standard deviation of
  ``log p(z)`` for ``z`` drawn from the model's own next-token distribution (Zhang et al., 2024,
  Min-K%++).

Pure functions of numpy arrays; ``core/likelihood.py`` computes the arrays from a model, and
``evaluation/inference.py`` the scores of every text under every model.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np

from lune.core.likelihood import TokenStats
from lune.core.models import BASE_LABEL
from lune.evaluation.metrics.registry import MetricContext, MetricRows, finite_or_none, metric
from lune.evaluation.metrics.result import MetricResult

SCORE_NAMES: tuple[str, ...] = ("loss", "zlib", "min_k", "min_k_plus_plus")
DEFAULT_K = 0.4  # open-unlearning's TOFU and MUSE configs (mia_min_k.yaml)
Rounding = Literal["floor", "ceil"]


def lowest_k_count(n: int, k: float, rounding: Rounding = "floor") -> int:
    """How many of ``n`` token scores min-k% averages: ``max(1, floor(k * n))`` (open-unlearning) or
    ``max(1, ceil(k * n))`` (lune's old variant)."""
    product = n * k  # the float product, as both originals compute it
    return max(1, int(product) if rounding == "floor" else math.ceil(product))


def _lowest_k_mean(values: np.ndarray, k: float, rounding: Rounding = "floor") -> float:
    if values.size == 0:
        return float("nan")
    return float(np.sort(values)[: lowest_k_count(values.size, k, rounding)].mean())


def loss_score(stats: TokenStats) -> float:
    return stats.mean_logprob


def zlib_score(stats: TokenStats, text: str) -> float:
    """``-NLL(x) / len(zlib.compress(x))`` with NLL the mean per token (bytes of UTF-8 text)."""
    return stats.mean_logprob / len(zlib.compress(text.encode("utf-8")))


def min_k_score(stats: TokenStats, k: float = DEFAULT_K, rounding: Rounding = "floor") -> float:
    return _lowest_k_mean(stats.logprobs, k, rounding)


def min_k_plus_plus_score(stats: TokenStats, k: float = DEFAULT_K, rounding: Rounding = "floor") -> float:
    standardised = (stats.logprobs - stats.mu) / np.maximum(stats.sigma, 1e-6)
    return _lowest_k_mean(standardised, k, rounding)


def mia_scores(
    stats: TokenStats, text: str, k: float = DEFAULT_K, rounding: Rounding = "floor", *, eos_scored: bool = False
) -> dict[str, float]:
    """All four scores of one text. ``eos_scored``: the last of ``stats`` is the answer's EOS, which
    the loss and zlib scores count and min-k% / min-k%++ leave out (as open-unlearning: its
    ``evaluate_probability`` scores every label, its ``tokenwise_logprobs`` all but the last)."""
    tokens = stats.without_last() if eos_scored else stats
    return {
        "loss": loss_score(stats),
        "zlib": zlib_score(stats, text),
        "min_k": min_k_score(tokens, k, rounding),
        "min_k_plus_plus": min_k_plus_plus_score(tokens, k, rounding),
    }


def _finite_pairs(members: Sequence[float], nonmembers: Sequence[float]) -> tuple[list[float], list[float]]:
    return ([float(v) for v in members if math.isfinite(v)], [float(v) for v in nonmembers if math.isfinite(v)])


def mia_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> MetricResult:
    """ROC AUC (``sklearn.metrics.roc_auc_score``) of a score separating members (label 1) from
    non-members (label 0). ``per_item`` is the members' scores then the non-members' (non-finite
    scores, e.g. of empty texts, are left out). ``None`` when either side is empty."""
    from sklearn.metrics import roc_auc_score

    members, nonmembers = _finite_pairs(member_scores, nonmember_scores)
    n = len(members) + len(nonmembers)
    detail = {"members": len(members), "nonmembers": len(nonmembers)}
    if not members or not nonmembers:
        return MetricResult(None, members + nonmembers, n, detail)
    auc = float(roc_auc_score([1] * len(members) + [0] * len(nonmembers), members + nonmembers))
    return MetricResult(auc, members + nonmembers, n, detail)


def best_threshold(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float | None:
    """The threshold ``tau`` maximising the balanced accuracy of "member iff score >= tau"
    (ties: the lowest such ``tau``); candidates are the observed scores."""
    members, nonmembers = _finite_pairs(member_scores, nonmember_scores)
    if not members or not nonmembers:
        return None
    best, best_acc = None, -1.0
    for tau in sorted(set(members + nonmembers)):
        acc = _balanced_accuracy(members, nonmembers, tau)
        if acc > best_acc:
            best, best_acc = tau, acc
    return best


def _balanced_accuracy(members: Sequence[float], nonmembers: Sequence[float], tau: float) -> float:
    tpr = sum(v >= tau for v in members) / len(members)
    tnr = sum(v < tau for v in nonmembers) / len(nonmembers)
    return (tpr + tnr) / 2


def threshold_accuracy(
    member_scores: Sequence[float], nonmember_scores: Sequence[float], threshold: float | None = None
) -> MetricResult:
    """LUNE's MIA accuracy: balanced accuracy of the attack "member iff score >= tau".

    ``acc = (TPR + TNR) / 2 = ([share of members with s >= tau] + [share of non-members with s < tau]) / 2``.
    ``threshold=None`` fits ``tau`` on these scores (:func:`best_threshold`); the evaluate stage fits
    it on the base model and applies the same ``tau`` to every unlearned model, so the figure says
    how many forget texts still cross the original attacker's line. ``per_item`` is 1.0 for each
    correctly classified text (members first). 0.5 is chance.
    """
    members, nonmembers = _finite_pairs(member_scores, nonmember_scores)
    n = len(members) + len(nonmembers)
    if not members or not nonmembers:
        return MetricResult(None, [], n, {"threshold": threshold})
    fitted = threshold is None
    tau = best_threshold(members, nonmembers) if fitted else threshold
    per_item = [1.0 if v >= tau else 0.0 for v in members] + [1.0 if v < tau else 0.0 for v in nonmembers]
    acc = _balanced_accuracy(members, nonmembers, tau)
    return MetricResult(
        acc,
        per_item,
        n,
        {
            "threshold": tau,
            "fitted": fitted,
            "tpr": sum(per_item[: len(members)]) / len(members),
            "tnr": sum(per_item[len(members) :]) / len(nonmembers),
        },
    )


# -- the family --------------------------------------------------------------------------------


@metric("mia")
def mia_rows(ctx: MetricContext) -> MetricRows:
    """``mia_auc_<score>`` for every score and ``mia_threshold_acc`` (loss score, threshold fitted on
    the base model, ``outputs[0]``) of every model with MIA scores; an item per text with the
    threshold's call."""
    rows = MetricRows()
    threshold: float | None = None
    suite = ctx.suite
    for out in ctx.outputs:
        if not (out.mia.get("member") and out.mia.get("nonmember")):
            continue
        for score in SCORE_NAMES:
            members = [s[score] for s in out.mia["member"]]
            nonmembers = [s[score] for s in out.mia["nonmember"]]
            rows.results.append(ctx.result(out, "mia", f"mia_auc_{score}", mia_auc(members, nonmembers)))
        members = [s["loss"] for s in out.mia["member"]]
        nonmembers = [s["loss"] for s in out.mia["nonmember"]]
        if out.spec.label == BASE_LABEL:
            threshold = best_threshold(members, nonmembers)
        accuracy = threshold_accuracy(members, nonmembers, threshold)
        rows.results.append(ctx.result(out, "mia", "mia_threshold_acc", accuracy, detail={"score": "loss"}))
        for side, texts in (("member", suite.mia_members), ("nonmember", suite.mia_nonmembers)):
            for text, scores in zip(texts, out.mia[side]):
                predicted = "member" if threshold is not None and scores["loss"] >= threshold else "nonmember"
                rows.items.append(
                    ctx.item(
                        out.spec,
                        f"mia_{side}",
                        text.text_id,
                        fact_id=text.fact_id,
                        prompt=(text.question or text.text)[:2000],
                        expected=text.text[:2000] if text.question else None,
                        verdict=predicted,
                        score=finite_or_none(scores["loss"]),
                        detail={**{k: finite_or_none(v) for k, v in scores.items()}, "source": text.source},
                    )
                )
    return rows
