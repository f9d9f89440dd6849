"""TOFU's metrics (Maini et al., 2024, section 2.2), from length-normalised answer log-likelihoods.

Inputs are plain numbers: for an answer ``a`` to question ``q``, ``lp(a) = (1/|a|) sum_t log p(a_t | q, a_<t)``
(mean token log-probability, so ``exp(lp(a)) = P(a|q)^(1/|a|)``, TOFU's normalised probability).

- truth ratio ``R = exp(mean_j lp(perturbed_j) - lp(paraphrased))``: how much more likely the
  wrong answers are than a paraphrase of the right one.
- forget quality: p-value of the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``)
  between the truth ratios of the unlearned model and of a model never trained on the forget set
  (the retain model), on the forget questions. High (> 0.05) means indistinguishable.
- model utility: harmonic mean of, on each of retain / real authors / world facts, the answer
  probability, the ROUGE-L recall of the greedy answer, and the truth-ratio statistic
  ``mean max(0, 1 - R)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lune.evaluation.metrics import MetricResult, harmonic_mean


def truth_ratios(paraphrased_lp: Sequence[float], perturbed_lp: Sequence[Sequence[float]]) -> list[float]:
    """Per question ``R_i = exp(mean_j perturbed_lp[i][j] - paraphrased_lp[i])`` (items with no
    perturbed answer get NaN)."""
    if len(paraphrased_lp) != len(perturbed_lp):
        raise ValueError("one list of perturbed answers per paraphrased answer")
    out = []
    for para, perturbed in zip(paraphrased_lp, perturbed_lp):
        if not perturbed:
            out.append(float("nan"))
            continue
        out.append(math.exp(sum(perturbed) / len(perturbed) - para))
    return out


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if math.isfinite(v)]


def truth_ratio_forget(ratios: Sequence[float]) -> MetricResult:
    """TOFU's forget-set truth-ratio statistic ``mean_i min(R_i, 1/R_i)`` (1 = the model cannot
    tell right from wrong answers; near 0 = it strongly prefers one)."""
    per_item = [min(r, 1.0 / r) if r > 0 else 0.0 for r in _finite(ratios)]
    return MetricResult(sum(per_item) / len(per_item) if per_item else None, per_item, len(per_item))


def truth_ratio_retain(ratios: Sequence[float]) -> MetricResult:
    """TOFU's truth-ratio statistic for retained sets, ``mean_i max(0, 1 - R_i)`` (1 = the right
    answer is far more likely than the wrong ones)."""
    per_item = [max(0.0, 1.0 - r) for r in _finite(ratios)]
    return MetricResult(sum(per_item) / len(per_item) if per_item else None, per_item, len(per_item))


def forget_quality(unlearned_ratios: Sequence[float], retain_model_ratios: Sequence[float]) -> MetricResult:
    """p-value of ``scipy.stats.ks_2samp(unlearned, retain_model)`` on the forget-set truth ratios;
    ``detail`` holds the KS statistic."""
    from scipy.stats import ks_2samp

    a, b = _finite(unlearned_ratios), _finite(retain_model_ratios)
    if not a or not b:
        return MetricResult(None, a, len(a), {"reason": "no truth ratios for one of the models"})
    test = ks_2samp(a, b)
    return MetricResult(float(test.pvalue), a, len(a), {"ks_statistic": float(test.statistic), "n_retain_model": len(b)})


def answer_probability(answer_lp: Sequence[float]) -> MetricResult:
    """TOFU's probability on the retain set: ``mean_i exp(lp(a_i))`` (normalised ``P(a|q)``)."""
    per_item = [math.exp(v) for v in _finite(answer_lp)]
    return MetricResult(sum(per_item) / len(per_item) if per_item else None, per_item, len(per_item))


def relative_answer_probability(answer_lp: Sequence[float], perturbed_lp: Sequence[Sequence[float]]) -> MetricResult:
    """TOFU's probability on real authors / world facts, where the options are given:
    ``mean_i P(a_i) / (P(a_i) + sum_j P(perturbed_ij))`` with normalised probabilities."""
    per_item = []
    for answer, perturbed in zip(answer_lp, perturbed_lp):
        if not math.isfinite(answer):
            continue
        true = math.exp(answer)
        total = true + sum(math.exp(p) for p in perturbed if math.isfinite(p))
        per_item.append(true / total if total > 0 else 0.0)
    return MetricResult(sum(per_item) / len(per_item) if per_item else None, per_item, len(per_item))


def model_utility(components: Mapping[str, float | None]) -> MetricResult:
    """Harmonic mean of the available components (TOFU: probability, ROUGE-L recall and truth-ratio
    statistic on retain, real authors and world facts: up to 9 numbers). Missing components are
    skipped and listed in ``detail``."""
    present = {k: float(v) for k, v in sorted(components.items()) if v is not None and math.isfinite(v)}
    missing = sorted(k for k, v in components.items() if v is None or not math.isfinite(v))
    return MetricResult(harmonic_mean(list(present.values())), list(present.values()), len(present),
                        {"components": present, "missing": missing})
