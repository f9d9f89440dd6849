"""TOFU's metrics (Maini et al., 2024, section 2.2), from length-normalised answer log-likelihoods.

Inputs are plain numbers: for an answer ``a`` to question ``q``, ``lp(a) = (1/|a|) sum_t log p(a_t | q, a_<t)``
(mean token log-probability, so ``exp(lp(a)) = P(a|q)^(1/|a|)``, TOFU's normalised probability).

- truth ratio ``R = exp(mean_j lp(perturbed_j) - lp(paraphrased))``: how much more likely the
  wrong answers are than a paraphrase of the right one.
- forget quality: p-value of the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``)
  between the truth ratios of the unlearned model and of a model never trained on the forget set
  (the retain model), on the forget questions. High (> 0.05) means indistinguishable.
- model utility: harmonic mean (``scipy.stats.hmean``) of, on each of retain / real authors / world
  facts, the answer probability, the ROUGE-L recall of the greedy answer, and the truth-ratio
  statistic ``mean max(0, 1 - R)``: nine numbers, as open-unlearning's ``model_utility``. Retain
  ROUGE is read on the retain probe set, which is TOFU's ``retain_perturbed`` facts by default
  (``EvaluateConfig.retain_probes``). A missing component is an error by default
  (``utility_missing``); ``skip`` is lune's old harmonic mean of those present.

The family writes them as ``eval_results`` rows (probe sets ``tofu_<group>`` and ``tofu``) and one
``eval_items`` row per TOFU item and model (the retain model's forget items too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lune.data.errors import LuneError
from lune.evaluation.metrics.registry import MetricContext, MetricRows, finite_or_none, metric
from lune.evaluation.metrics.result import MetricResult
from lune.evaluation.metrics.rouge import rouge_l_recall
from lune.evaluation.outputs import ModelOutputs


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
    return MetricResult.mean_of([min(r, 1.0 / r) if r > 0 else 0.0 for r in _finite(ratios)])


def truth_ratio_retain(ratios: Sequence[float]) -> MetricResult:
    """TOFU's truth-ratio statistic for retained sets, ``mean_i max(0, 1 - R_i)`` (1 = the right
    answer is far more likely than the wrong ones)."""
    return MetricResult.mean_of([max(0.0, 1.0 - r) for r in _finite(ratios)])


def forget_quality(unlearned_ratios: Sequence[float], retain_model_ratios: Sequence[float]) -> MetricResult:
    """p-value of ``scipy.stats.ks_2samp(unlearned, retain_model)`` on the forget-set truth ratios;
    ``detail`` holds the KS statistic."""
    from scipy.stats import ks_2samp

    a, b = _finite(unlearned_ratios), _finite(retain_model_ratios)
    if not a or not b:
        return MetricResult(None, a, len(a), {"reason": "no truth ratios for one of the models"})
    test = ks_2samp(a, b)
    detail = {"ks_statistic": float(test.statistic), "n_retain_model": len(b)}
    return MetricResult(float(test.pvalue), a, len(a), detail)


def answer_probability(answer_lp: Sequence[float]) -> MetricResult:
    """TOFU's probability on the retain set: ``mean_i exp(lp(a_i))`` (normalised ``P(a|q)``)."""
    return MetricResult.mean_of([math.exp(v) for v in _finite(answer_lp)])


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
    return MetricResult.mean_of(per_item)


UTILITY_GROUPS: tuple[str, ...] = ("retain", "real_authors", "world_facts")
UTILITY_STATS: tuple[str, ...] = ("probability", "rouge_l_recall", "truth_ratio")
# open-unlearning's model_utility.yaml: retain_Q_A_Prob, retain_Q_A_ROUGE, retain_Truth_Ratio, ra_*, wf_*
UTILITY_COMPONENTS: tuple[str, ...] = tuple(f"{g}_{s}" for g in UTILITY_GROUPS for s in UTILITY_STATS)


class MissingUtilityComponents(ValueError):
    """Model utility was asked with all nine components and some are missing (``.missing``)."""

    def __init__(self, missing: list[str]):
        super().__init__(
            f"TOFU model utility needs {len(UTILITY_COMPONENTS)} components; missing: {', '.join(missing)}"
        )
        self.missing = missing


def model_utility(components: Mapping[str, float | None], *, require_all: bool = False) -> MetricResult:
    """Harmonic mean ``n / sum_i (1 / c_i)`` (``scipy.stats.hmean``; 0 when a component is 0, as in
    TOFU) of the components (TOFU: probability, ROUGE-L recall and truth-ratio statistic on retain,
    real authors and world facts: :data:`UTILITY_COMPONENTS`).

    ``require_all``: every one of the nine must be present and finite, else
    :class:`MissingUtilityComponents` (open-unlearning's protocol). Otherwise (lune's old variant)
    missing components are skipped and listed in ``detail``; None when none is available."""
    from scipy.stats import hmean

    present = {k: float(v) for k, v in sorted(components.items()) if v is not None and math.isfinite(v)}
    missing = sorted(k for k, v in components.items() if v is None or not math.isfinite(v))
    if require_all:
        missing = [k for k in UTILITY_COMPONENTS if k not in present]
        if missing:
            raise MissingUtilityComponents(missing)
        present = {k: present[k] for k in UTILITY_COMPONENTS}
    values = list(present.values())
    return MetricResult(
        float(hmean(values)) if values else None, values, len(present), {"components": present, "missing": missing}
    )


# -- the family --------------------------------------------------------------------------------


@metric("tofu")
def tofu_rows(ctx: MetricContext) -> MetricRows:
    """Per model with TOFU likelihoods: truth ratio and probability on every group, ROUGE-L recall on
    the retained groups, forget quality against the retain model, model utility."""
    rows = MetricRows()
    retain_ratios = None
    retain = ctx.retain
    if retain is not None and retain.truth.get("forget"):
        retain_ratios = truth_ratios(
            [t.paraphrased_mean for t in retain.truth["forget"]], [t.perturbed for t in retain.truth["forget"]]
        )
        for item, ratio in zip(ctx.suite.truth["forget"], retain_ratios):
            rows.items.append(
                ctx.item(
                    retain.spec,
                    "tofu_forget",
                    item.fact_id,
                    fact_id=item.fact_id,
                    prompt=item.question,
                    expected=item.answer,
                    score=finite_or_none(ratio),
                    detail={"truth_ratio": finite_or_none(ratio)},
                )
            )
    for out in ctx.outputs:
        if out.truth:
            _model_rows(ctx, out, retain_ratios, rows)
    return rows


def _model_rows(ctx: MetricContext, out: ModelOutputs, retain_ratios: list[float] | None, rows: MetricRows) -> None:
    suite = ctx.suite
    components: dict[str, float | None] = {}
    for group, likelihoods in out.truth.items():
        ratios = truth_ratios([t.paraphrased_mean for t in likelihoods], [t.perturbed for t in likelihoods])
        probe_set = f"tofu_{group}"
        for item, lik, ratio in zip(suite.truth[group], likelihoods, ratios):
            rows.items.append(
                ctx.item(
                    out.spec,
                    probe_set,
                    item.fact_id,
                    fact_id=item.fact_id,
                    prompt=item.question,
                    expected=item.answer,
                    score=finite_or_none(ratio),
                    detail={
                        "truth_ratio": finite_or_none(ratio),
                        "answer_lp": lik.answer,
                        "paraphrased_lp": lik.paraphrased,
                        "perturbed_lp": lik.perturbed,
                    },
                )
            )
        answers = [t.answer for t in likelihoods]
        if group == "forget":
            rows.results.append(ctx.result(out, probe_set, "truth_ratio", truth_ratio_forget(ratios)))
            rows.results.append(ctx.result(out, probe_set, "probability", answer_probability(answers)))
            if retain_ratios is not None:
                rows.results.append(ctx.result(out, "tofu", "forget_quality", forget_quality(ratios, retain_ratios)))
            continue
        stat = truth_ratio_retain(ratios)
        if group == "retain":
            prob = answer_probability(answers)
            rouge = rouge_l_recall(ctx.generations(out, "retain"), [p.answer for p in suite.probes.get("retain", [])])
        else:
            prob = relative_answer_probability(answers, [t.perturbed for t in likelihoods])
            pairs = [
                (g, p.answer)
                for g, p in zip(ctx.generations(out, "utility"), suite.probes.get("utility", []))
                if (p.group or "utility") == group
            ]
            rouge = rouge_l_recall([g for g, _ in pairs], [a for _, a in pairs])
        rows.results.append(ctx.result(out, probe_set, "truth_ratio", stat))
        rows.results.append(ctx.result(out, probe_set, "probability", prob))
        rows.results.append(ctx.result(out, probe_set, "rouge_l_recall", rouge))
        components.update(
            {
                f"{group}_probability": prob.value,
                f"{group}_truth_ratio": stat.value,
                f"{group}_rouge_l_recall": rouge.value,
            }
        )
    if components:
        require_all = ctx.config.utility_missing == "error"
        try:
            utility = model_utility(components, require_all=require_all)
        except MissingUtilityComponents as err:
            raise LuneError(
                f"model {out.spec.label}: {err} (each needs its TOFU group: retain facts with perturbed answers, "
                "real_authors and world_facts utility facts, and their generated answers for ROUGE); "
                "set evaluate.utility_missing: skip for the harmonic mean of those present, or evaluate.tofu: false"
            ) from None
        rows.results.append(ctx.result(out, "tofu", "model_utility", utility, detail={"require_all": require_all}))
