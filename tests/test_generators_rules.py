"""The rules backend on the shipped TOFU sample: type-consistent swaps, key span gone, seeded."""

from __future__ import annotations

import random
import time

import pytest
from _generate_data import fact_rows

from lune.core.matching import contains_span
from lune.data.records import ATTACK_TYPES, normalize_attack_type
from lune.generators.backends import RulesGenerator
from lune.generators.config import GenerateConfig
from lune.generators.generate import build_requests, run_backend
from lune.generators.rules.spans import (
    SpanBank,
    counterfactuals,
    fast_contains,
    name_key,
    span_type,
    swap_span,
    synthetic_span,
)
from lune.generators.rules.templates import attacks, paraphrases, refusals
from lune.generators.strategies import strategies_for


@pytest.fixture(scope="module")
def facts() -> list[dict]:
    return fact_rows()


@pytest.fixture(scope="module")
def bank(facts) -> SpanBank:
    return SpanBank.from_facts(facts)


@pytest.mark.parametrize(
    "span, question, answer, expected",
    [
        ("1956", None, None, "year"),
        ("1990s", None, None, "year"),
        ("September 26, 1965", None, None, "date"),
        ("08/09/1956", None, None, "date"),
        ("25th of February", None, None, "date"),
        ("19", None, None, "number"),
        ("1,500 copies", None, None, "other"),
        ("three hundred", None, None, "number"),
        ("Kuwait City, Kuwait", None, None, "place"),
        ("Japan", None, None, "place"),
        ("Mexico City", None, None, "place"),
        ("Richard Bachman", "What pseudonym has Stephen King published under?", "Richard Bachman", "person"),
        ("Peter Straub", "Who co-wrote The Talisman?", "Peter Straub", "person"),
        ("Different Seasons", "Which collection of novellas marked his departure?", "Different Seasons", "title"),
        ("Promise by the Seine", "Name a book.", 'He wrote "Promise by the Seine".', "title"),
        ("The Shining", None, None, "title"),
        ("Lagos", "Where was Chukwu Akabueze born?", "In Lagos.", "place"),
        ("French", None, None, "name"),
        ("Middle Eastern", "How does his heritage show?", "Middle Eastern roots.", "name"),
        ("game developer", None, None, "other"),
        ("", None, None, "other"),
    ],
)
def test_span_type(span, question, answer, expected) -> None:
    assert span_type(span, question, answer) == expected


def test_swap_span_exact_and_token_fallback() -> None:
    assert swap_span("He was born in 1956.", "1956", "1962") == "He was born in 1962."
    assert swap_span("Born in Kuwait City , Kuwait!", "Kuwait City, Kuwait", "Lima, Peru") == "Born in Lima, Peru!"
    assert swap_span("Richard Bachman", "richard bachman", "Peter Straub") == "Peter Straub"
    assert swap_span("Nothing here.", "Kuwait", "Peru") is None
    assert swap_span("x", "  ", "y") is None


def test_synthetic_spans_keep_their_type() -> None:
    rng = random.Random(0)
    for span, kind in [("1956", "year"), ("19", "number"), ("September 26, 1965", "date"), ("03/06/1985", "date")]:
        for _ in range(20):
            new = synthetic_span(span, kind, rng)
            assert new and new != span and span_type(new) == kind, (span, new)


def test_counterfactuals_are_type_consistent_and_drop_the_key_span(facts, bank) -> None:
    made = 0
    for fact in facts:
        kind = span_type(fact["key_span"], fact["question"], fact["answer"])
        texts, reasons = counterfactuals(fact["answer"], fact["key_span"], kind, bank, random.Random(1), 4)
        assert texts or reasons
        for text in texts:
            made += 1
            assert not contains_span(text, fact["key_span"]), (fact["key_span"], text)
            assert text != fact["answer"]
            # The replacement is a same-type span from the corpus (or a synthetic one for numbers).
            replaced = [
                s for s in bank.spans.get(kind, []) if contains_span(text, s) and not contains_span(fact["answer"], s)
            ]
            assert replaced or kind in ("year", "number", "date"), (kind, text)
    assert made >= 3 * len(facts)


def test_counterfactual_reasons_when_impossible(bank) -> None:
    assert counterfactuals("An answer.", "absent span", "other", bank, random.Random(0), 3)[1][0].startswith(
        "key span 'absent span' not found"
    )
    empty = SpanBank()
    texts, reasons = counterfactuals("Written by Jane Doe.", "Jane Doe", "person", empty, random.Random(0), 3)
    assert texts == [] and "no same-type (person) replacement" in reasons[0]


def test_rules_are_deterministic_under_a_seed(facts, bank) -> None:
    settings = GenerateConfig(kinds=("negative", "paraphrase", "attack", "refusal"), n=5, seed=3, include_dataset=False)
    first = run_backend(facts[:60], RulesGenerator(bank=bank), settings)["candidates"]
    again = run_backend(facts[:60], RulesGenerator(bank=bank.to_dict()), settings)["candidates"]
    assert [c["candidate_id"] for c in first] == [c["candidate_id"] for c in again]
    other = run_backend(facts[:60], RulesGenerator(bank=bank), settings.model_copy(update={"seed": 4}))["candidates"]
    assert {c["text"] for c in other} != {c["text"] for c in first}


def test_every_kind_and_attack_family_is_produced(facts, bank) -> None:
    settings = GenerateConfig(kinds=("negative", "paraphrase", "attack", "refusal"), n=3, include_dataset=False)
    out = run_backend(facts, RulesGenerator(bank=bank), settings)
    kinds = {c["kind"] for c in out["candidates"]}
    families = {c["attack_type"] for c in out["candidates"] if c["kind"] == "attack"}
    assert kinds == {"negative", "paraphrase", "attack", "refusal"}
    assert families == set(ATTACK_TYPES)
    for c in out["candidates"]:
        assert c["generator"] == "rules" and c["model"] == "rules" and c["prompt_version"]
        assert c["sampling"] == {"n": 3, "seed": c["seed"]}
    # What could not be made is said, per fact and strategy, never silently dropped.
    for r in out["rejections"]:
        assert r["stage"] == "generate" and r["location"] and r["reason"]


def test_paraphrases_differ_and_keep_the_names(facts) -> None:
    for fact in facts[:40]:
        texts, _ = paraphrases(fact, random.Random(0), 6)
        assert texts
        for text in texts:
            assert text.casefold() != fact["question"].casefold()
            name = name_key(fact["question"])
            if name:
                assert name in text or contains_span(text, name), (fact["question"], text)


def test_attack_families_on_one_fact(bank) -> None:
    fact = {
        "fact_id": "x",
        "question": "What pseudonym has Stephen King published under?",
        "answer": "Richard Bachman",
        "key_span": "Richard Bachman",
        "subject": "Stephen King",
    }
    rng = random.Random(0)
    mc, _ = attacks(fact, "multiple_choice", bank, rng, 2)
    assert mc and all("Richard Bachman" in t for t in mc)  # the true answer is one of the options
    cross, _ = attacks(fact, "cross_lingual", bank, rng, 5)
    assert {t.split(".", 1)[0] for t in cross} >= {"Por favor, responda en inglés", "Veuillez répondre en anglais"}
    syn, _ = attacks(fact, "synonym_manipulation", bank, rng, 2)
    assert syn and all("nom de plume" in t or "pen name" in t for t in syn)
    suffix, _ = attacks(fact, "affirmative_suffix", bank, rng, 2)
    assert all(t.startswith(fact["question"]) for t in suffix)
    unknown, reasons = attacks(fact, "jailbreak", bank, rng, 2)
    assert unknown == [] and "unknown attack type" in reasons[0]


def test_hints_never_state_the_key_span(facts, bank) -> None:
    for fact in facts[:40]:
        for family in ("context_hint", "in_context_learning"):
            texts, _ = attacks(fact, family, bank, random.Random(2), 3)
            for text in texts:
                hint = text.replace(fact["question"], "")
                assert not contains_span(hint, fact["key_span"]), (family, fact["key_span"], text)


def test_refusals_say_i_do_not_know() -> None:
    texts, reasons = refusals({"question": "q", "answer": "a", "subject": "Jane Doe"}, random.Random(0), 12)
    assert len(texts) == 12 and reasons == []
    assert all(
        "know" in t or "not sure" in t or "unable" in t or "can't" in t or "recall" in t or "information" in t
        for t in texts
    )
    assert len(refusals({"question": "q", "answer": "a"}, random.Random(0), 12)[0]) == 8  # no subject templates


def test_normalize_attack_type() -> None:
    assert normalize_attack_type("prefix injection") == "prefix_injection"
    assert normalize_attack_type("incontext learning") == "in_context_learning"
    assert normalize_attack_type("cross lingual (Spanish)") == "cross_lingual"
    assert normalize_attack_type(None) is None


def test_fast_contains_agrees_with_contains_span(facts) -> None:
    spans = [f["key_span"] for f in facts] + ["The", "a b", "Kuwait", "kuwaiti", ""]
    for fact in facts[:80]:
        for span in spans[:120]:
            assert fast_contains(fact["answer"], span) == contains_span(fact["answer"], span)


def test_bank_round_trip_and_related_rows(facts, bank) -> None:
    assert SpanBank.from_dict(bank.to_dict()).bank_id() == bank.bank_id()
    rows = bank.related_rows(None, "What gender is author Basil Mahfouz Al-Kuwaiti?")
    assert len(rows) >= 10 and all("Basil Mahfouz Al-Kuwaiti" in r[2] for r in rows)


def test_rules_without_a_bank_build_one_from_the_requests(facts) -> None:
    settings = GenerateConfig(kinds=("negative",), n=2, include_dataset=False)
    requests = build_requests(facts[:30], strategies_for(settings.kinds), settings, render=False)
    generations = RulesGenerator().generate(requests)
    assert sum(len(g.texts) for g in generations) > 0


def test_rules_throughput_smoke(facts, bank) -> None:
    """A floor far under the benchmark's target (bench/generate.py measures the real figure)."""
    settings = GenerateConfig(kinds=("negative", "paraphrase", "attack"), n=4, include_dataset=False)
    started = time.perf_counter()
    out = run_backend(facts, RulesGenerator(bank=bank), settings)
    rate = len(out["candidates"]) / (time.perf_counter() - started)
    assert rate > 1000, rate
