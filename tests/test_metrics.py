"""Metric functions against hand-computed values and against the libraries they wrap."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from lune.evaluation.metrics import mia, tofu
from lune.evaluation.metrics.apr import apr
from lune.evaluation.metrics.gur import gur
from lune.evaluation.metrics.rouge import rouge_l_recall
from lune.evaluation.metrics.usr import is_long_span, key_score, recall, states_key, usr
from lune.evaluation.metrics.word_ngram_entropy import ngram_entropy, word_ngram_entropy

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
    assert mia.min_k_score(stats, 0.4) == pytest.approx(-4.0)  # ceil(0.4 * 5) = 2 lowest: -5, -3
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
