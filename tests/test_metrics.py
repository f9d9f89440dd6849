"""Metric functions against hand-computed values and against the libraries they wrap."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from lune.core.models import ModelSpec
from lune.evaluation.config import EvaluateConfig
from lune.evaluation.metrics import memorization, mia, privleak, tofu
from lune.evaluation.metrics.apr import apr
from lune.evaluation.metrics.gur import gur
from lune.evaluation.metrics.registry import MetricContext
from lune.evaluation.metrics.rouge import rouge_l_recall
from lune.evaluation.metrics.usr import is_long_span, key_score, recall, states_key, usr
from lune.evaluation.metrics.word_ngram_entropy import ngram_entropy, word_ngram_entropy
from lune.evaluation.outputs import ModelOutputs, TruthLikelihoods
from lune.evaluation.probes import ProbeSuite

# -- USR / APR normalisation: known answers -----------------------------------------------------


@pytest.mark.parametrize(
    ("generation", "span", "stated"),
    [
        ("He was born in Kuwait City.", "Kuwait City", True),
        ("HE WAS BORN IN KUWAIT-CITY!", "kuwait city", True),  # case and punctuation
        ("The author is Kuwaiti.", "Kuwait", False),  # whole tokens only
        ("It happened in 1956.", "1956", True),
        ("It happened in 19567.", "1956", False),
        ("He wrote Shining, a novel.", "The Shining", True),  # a leading article is no knowledge
        ("I don't know.", "Basil Mahfouz Al-Kuwaiti", False),
        ("Basil Mahfouz Al Kuwaiti", "Basil Mahfouz Al-Kuwaiti", True),  # hyphen = space
        ("Café Tacuba played", "CAFÉ TACUBA", True),  # NFKC + case-fold, accents kept
        ("Cafe Tacuba played", "Café Tacuba", False),
        ("anything", "", False),  # an empty span is never stated
    ],
)
def test_states_key_short_spans(generation: str, span: str, stated: bool) -> None:
    assert states_key(generation, span) is stated


def test_long_spans_use_coverage() -> None:
    span = "a collection of short horror stories set in rural Maine during winter storms"
    assert is_long_span(span)  # 14 tokens > 8
    # content tokens (> 2 chars): collection short horror stories set rural maine during winter storms = 10
    half = "short horror stories set in rural Maine"  # short horror stories set rural maine = 6 of 10
    assert key_score(half, span) == pytest.approx(0.6)
    assert states_key(half, span) is True
    assert states_key("stories about Maine", span) is False  # 2 / 10
    assert states_key(half, span, coverage_threshold=0.7) is False
    # the same span judged as short (exact) when the limit is raised
    assert states_key(half, span, long_span_tokens=20) is False


def test_usr_and_recall_hand_computed() -> None:
    gens = ["Paris", "It is Berlin.", "I am not sure", "paris, france"]
    spans = ["Paris", "Paris", "Paris", "Paris"]
    result = usr(gens, spans)
    assert result.per_item == [0.0, 1.0, 1.0, 0.0]
    assert result.value == 0.5 and result.n == 4 and result.detail["leaked"] == 2
    rec = recall(gens, spans)
    assert rec.per_item == [1.0, 0.0, 0.0, 1.0] and rec.value == 0.5
    assert usr([], []).value is None
    with pytest.raises(ValueError):
        usr(["a"], [])


def test_gur_per_set_and_mean() -> None:
    result = gur({"retain": 0.45, "neighbor": 0.8, "utility": 0.3}, {"retain": 0.9, "neighbor": 0.8, "utility": 0.0})
    assert result.detail["per_set"] == {"neighbor": 1.0, "retain": 0.5}
    assert result.detail["skipped_sets"] == ["utility"]  # nothing to retain
    assert result.value == pytest.approx(0.75)
    assert gur({}, {}).value is None


def test_apr_overall_and_per_type() -> None:
    gens = ["Stephen King", "no idea", "Richard Bachman", "nobody", "Carrie"]
    spans = ["Stephen King", "Stephen King", "Richard Bachman", "Richard Bachman", "Carrie"]
    types = [None, "role_play", "role_play", "prefix_injection", "prefix_injection"]
    result = apr(gens, spans, types)
    assert result.value == pytest.approx(2 / 5)
    assert result.detail["per_type"] == {"paraphrase": 0.0, "prefix_injection": 0.5, "role_play": 0.5}
    assert result.detail["n_per_type"] == {"paraphrase": 1, "prefix_injection": 2, "role_play": 2}


# -- word n-gram entropy, ROUGE-L ---------------------------------------------------------------


def test_ngram_entropy_hand_computed() -> None:
    # bigrams (a b) x2, (b a) x1: H2 = -(2/3 log2 2/3 + 1/3 log2 1/3); trigrams (a b a), (b a b): H3 = 1
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("word") == 0.0
    repeated = word_ngram_entropy(["the the the the the the"]).value
    varied = word_ngram_entropy(["the cat sat on the warm mat"]).value
    assert repeated == 0.0 and varied > 1.5


def test_rouge_l_recall_hand_computed_and_library() -> None:
    from rouge_score import rouge_scorer

    result = rouge_l_recall(["the cat on mat", "dogs"], ["the cat sat on the mat", "the dog"])
    assert result.per_item[0] == pytest.approx(4 / 6)  # LCS "the cat on mat" over 6 reference tokens
    assert result.per_item[1] == pytest.approx(1 / 2)  # the Porter stemmer: dogs ~ dog
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert result.per_item[1] == scorer.score("the dog", "dogs")["rougeL"].recall
    assert result.value == pytest.approx((4 / 6 + 1 / 2) / 2)


def test_model_utility_is_the_harmonic_mean() -> None:
    from scipy.stats import hmean

    components = {"retain_probability": 0.2, "retain_rouge_l_recall": 0.5, "retain_truth_ratio": 0.9}
    result = tofu.model_utility(components)
    assert result.value == pytest.approx(3 / (1 / 0.2 + 1 / 0.5 + 1 / 0.9))  # 3 / (5 + 2 + 1.11)
    assert result.value == hmean(list(components.values()))
    assert tofu.model_utility({"retain_probability": 0.3, "retain_truth_ratio": 0.0}).value == 0.0  # as TOFU
    assert tofu.model_utility({"retain_probability": None}).value is None


# -- membership inference ----------------------------------------------------------------------


def _stats(logprobs: list[float], mu: list[float] | None = None, sigma: list[float] | None = None) -> mia.TokenStats:
    n = len(logprobs)
    return mia.TokenStats(np.array(logprobs), np.array(mu or [0.0] * n), np.array(sigma or [1.0] * n))


def test_mia_scores_hand_computed() -> None:
    stats = _stats([-1.0, -5.0, -3.0, -0.5, -2.0], mu=[-1.0, -2.0, -2.0, -1.0, -2.0], sigma=[1.0, 2.0, 0.5, 1.0, 1.0])
    assert mia.loss_score(stats) == pytest.approx(-2.3)
    assert mia.min_k_score(stats, 0.4) == pytest.approx(-4.0)  # floor(0.4 * 5) = 2 lowest: -5, -3
    assert mia.min_k_score(stats, 0.01) == pytest.approx(-5.0)  # at least one token
    # standardised: 0, -1.5, -2, 0.5, 0 -> two lowest -2, -1.5
    assert mia.min_k_plus_plus_score(stats, 0.4) == pytest.approx(-1.75)
    text = "a text to compress"
    assert mia.zlib_score(stats, text) == pytest.approx(-2.3 / len(zlib.compress(text.encode())))
    assert set(mia.mia_scores(stats, text)) == set(mia.SCORE_NAMES)


def test_mia_auc_hand_computed_and_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    members, nonmembers = [3.0, 2.0], [1.0, 2.5]
    result = mia.mia_auc(members, nonmembers)
    assert result.value == pytest.approx(0.75)  # 3 of 4 (member, non-member) pairs ordered right
    assert result.value == roc_auc_score([1, 1, 0, 0], members + nonmembers)
    assert mia.mia_auc([1.0, float("nan")], [0.0]).value == 1.0  # non-finite scores left out
    assert mia.mia_auc([1.0], []).value is None


def test_threshold_accuracy_fitted_and_given() -> None:
    members, nonmembers = [0.9, 0.8, 0.3], [0.5, 0.2]
    assert mia.best_threshold(members, nonmembers) == 0.8
    fitted = mia.threshold_accuracy(members, nonmembers)
    assert fitted.value == pytest.approx((2 / 3 + 1) / 2)
    assert fitted.per_item == [1.0, 1.0, 0.0, 1.0, 1.0] and fitted.detail["fitted"] is True
    given = mia.threshold_accuracy(members, nonmembers, threshold=0.95)
    assert given.value == 0.5 and given.detail["tpr"] == 0.0


# -- TOFU --------------------------------------------------------------------------------------


def test_truth_ratio_and_statistics() -> None:
    ratios = tofu.truth_ratios([-1.0, -2.0], [[-2.0, -3.0], [-1.0]])
    assert ratios == pytest.approx([math.exp(-1.5), math.exp(1.0)])
    forget = tofu.truth_ratio_forget(ratios)
    assert forget.per_item == pytest.approx([math.exp(-1.5), math.exp(-1.0)])
    retain = tofu.truth_ratio_retain(ratios)
    assert retain.per_item == pytest.approx([1 - math.exp(-1.5), 0.0])
    assert tofu.truth_ratios([-1.0], [[]])[0] != tofu.truth_ratios([-1.0], [[]])[0]  # NaN without perturbed answers


def test_forget_quality_matches_scipy() -> None:
    from scipy.stats import ks_2samp

    a = [0.1, 0.4, 0.35, 0.8, 0.5]
    b = [0.6, 0.9, 0.75, 0.95, 0.7, 0.85]
    result = tofu.forget_quality(a, b)
    assert result.value == pytest.approx(ks_2samp(a, b).pvalue)
    assert result.detail["ks_statistic"] == pytest.approx(ks_2samp(a, b).statistic)
    assert tofu.forget_quality(a, a).value == pytest.approx(1.0)
    assert tofu.forget_quality(a, []).value is None


def test_tofu_probabilities_and_model_utility() -> None:
    assert tofu.answer_probability([math.log(0.5), math.log(0.25)]).value == pytest.approx(0.375)
    rel = tofu.relative_answer_probability([math.log(0.5)], [[math.log(0.25), math.log(0.25)]])
    assert rel.value == pytest.approx(0.5)
    mu = tofu.model_utility({"retain_probability": 0.5, "retain_rouge_l_recall": 0.25, "world_facts_truth_ratio": None})
    assert mu.value == pytest.approx(2 / (2 + 4))
    assert mu.detail["missing"] == ["world_facts_truth_ratio"]


# -- exact memorization, extraction strength, privacy leakage ---------------------------------


def _extraction_strength_loop(is_argmax: list[bool]) -> float:
    """open-unlearning's ``extraction_strength`` loop over one answer, restated on booleans: the first
    ``k`` whose suffix is all greedy, else the loop's last ``k`` (``n - 1``)."""
    n = len(is_argmax)
    for k in range(n):
        if all(is_argmax[k:]):
            break
    return 1 - k / n


@pytest.mark.parametrize(
    ("is_argmax", "em", "es"),
    [
        ([True, False, True, True], 0.75, 0.5),  # last miss at token 1: k* = 2 of 4
        ([False, True, True, True, True], 0.8, 0.8),  # k* = 1 of 5
        ([True, True, True], 1.0, 1.0),  # the whole answer is greedy: k* = 0
        ([True, True, False], 2 / 3, 0.0),  # even the last token is wrong: k* = n
        ([False], 0.0, 0.0),
    ],
)
def test_exact_memorization_and_extraction_strength_hand_computed(is_argmax: list[bool], em: float, es: float) -> None:
    assert memorization.exact_memorization(is_argmax) == pytest.approx(em)
    assert memorization.extraction_strength(is_argmax) == pytest.approx(es)
    # open-unlearning's loop agrees whenever the last token is greedy; otherwise it gives 1/n, not 0
    expected = es if is_argmax[-1] else 1 / len(is_argmax)
    assert _extraction_strength_loop(is_argmax) == pytest.approx(expected)


def test_memorization_means_over_scored_answers() -> None:
    answers = [[True, False, True, True], [], [True, True, False]]
    em = memorization.mean_over_answers(answers, memorization.exact_memorization)
    assert em.value == pytest.approx((0.75 + 2 / 3) / 2) and em.n == 2 and em.detail["skipped"] == 1
    es = memorization.mean_over_answers(answers, memorization.extraction_strength)
    assert es.per_item == pytest.approx([0.5, 0.0])
    assert memorization.exact_memorization([]) is None and memorization.extraction_strength([]) is None


def test_privleak_hand_computed() -> None:
    # retain AUC 0.6: reference 1 - 0.6 = 0.4
    assert privleak.privleak(0.9, 0.6) == pytest.approx((0.1 - 0.4) / 0.4 * 100)  # -75: forget texts stand out
    assert privleak.privleak(0.6, 0.6) == pytest.approx(0.0)  # as the retain model: the goal
    assert privleak.privleak(0.3, 0.6) == pytest.approx(75.0)  # over-unlearned
    assert privleak.privleak(1.0, 0.5) == pytest.approx(-100.0)
    assert privleak.privleak(0.7, 1.0) is None and privleak.privleak(None, 0.5) is None


def _context(outputs: list[ModelOutputs], retain: ModelOutputs | None) -> MetricContext:
    return MetricContext("run", ProbeSuite({}), outputs, retain, EvaluateConfig())


def _mia(members: list[float], nonmembers: list[float]) -> dict[str, list[dict[str, float]]]:
    return {"member": [{"min_k": v} for v in members], "nonmember": [{"min_k": v} for v in nonmembers]}


def test_privleak_rows_against_the_retain_model() -> None:
    base = ModelOutputs(ModelSpec("base", "m"), mia=_mia([-1.0, -2.0], [-3.0, -1.5]))  # AUC 3/4
    lune = ModelOutputs(ModelSpec("lune", "m", "a", "lune"), mia=_mia([-3.5, -2.0], [-3.0, -1.5]))  # AUC 1/4
    retain = ModelOutputs(ModelSpec("retain_model", "r"), mia=_mia([-2.0, -2.5], [-3.0, -1.5]))  # AUC 2/4
    rows = privleak.privleak_rows(_context([base, lune], retain)).results
    values = {r["model_label"]: r["value"] for r in rows}
    assert values == pytest.approx({"base": -50.0, "lune": 50.0})  # ((1 - AUC) - 0.5) / 0.5 * 100
    assert {(r["probe_set"], r["metric"]) for r in rows} == {("mia", "privleak")}
    assert rows[0]["detail"]["auc_retain"] == 0.5 and rows[0]["detail"]["auc"] == 0.75 and rows[0]["n"] == 4
    assert privleak.privleak_rows(_context([base, lune], None)).results == []  # no retain model: no row


def test_memorization_rows_per_group_with_the_retain_reference() -> None:
    def truth(*answers: list[bool]) -> list[TruthLikelihoods]:
        return [TruthLikelihoods(-1.0, [], [], list(a)) for a in answers]

    base = ModelOutputs(
        ModelSpec("base", "m"),
        truth={"forget": truth([True, True], [True, False]), "retain": truth([True]), "world_facts": truth([True])},
    )
    unscored = ModelOutputs(ModelSpec("lune", "m", "a", "lune"), truth={"forget": [TruthLikelihoods(-1.0, [], [])]})
    retain = ModelOutputs(ModelSpec("retain_model", "r"), truth={"forget": truth([False, True], [False, False])})
    rows = memorization.memorization_rows(_context([base, unscored], retain)).results
    got = {(r["model_label"], r["probe_set"], r["metric"]): r for r in rows}
    assert set(got) == {
        ("base", f"tofu_{g}", m) for g in ("forget", "retain") for m in ("exact_memorization", "extraction_strength")
    }
    assert got[("base", "tofu_forget", "exact_memorization")]["value"] == pytest.approx(0.75)
    assert got[("base", "tofu_forget", "extraction_strength")]["value"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert got[("base", "tofu_forget", "exact_memorization")]["detail"] == {"skipped": 0, "retain_model": 0.25}
    assert got[("base", "tofu_forget", "extraction_strength")]["detail"]["retain_model"] == pytest.approx(0.25)
    assert got[("base", "tofu_retain", "exact_memorization")]["value"] == 1.0


def test_completion_stats_marks_the_teacher_forced_argmax(tiny_model_dir) -> None:
    import torch

    from lune.core.likelihood import completion_stats
    from lune.core.models import load_causal_lm

    model, tokenizer = load_causal_lm(tiny_model_dir)
    prompts = ["Question: Who wrote it?\nAnswer:", "Question: Where?\nAnswer:", ""]
    completions = [" Basil Mahfouz Al-Kuwaiti wrote it.", " Kuwait", "A plain text to score as a whole."]
    stats = completion_stats(model, tokenizer, prompts, completions, batch_size=3)
    plain = completion_stats(model, tokenizer, prompts, completions, batch_size=1, distribution=False)
    for prompt, completion, got, alone in zip(prompts, completions, stats, plain):
        head = tokenizer(prompt)["input_ids"] if prompt else [tokenizer.bos_token_id]
        tail = tokenizer(completion, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([head + tail])).logits[0]
        expected = (logits[len(head) - 1 : -1].argmax(-1) == torch.tensor(tail)).numpy()
        assert got.is_argmax.dtype == bool and got.is_argmax.tolist() == expected.tolist()
        assert alone.is_argmax.tolist() == expected.tolist()  # also without the distribution, unpadded
        assert alone.mean_logprob == pytest.approx(got.mean_logprob, abs=1e-5)
