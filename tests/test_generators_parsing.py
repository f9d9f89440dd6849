"""Strategies' prompts and parsers, without a model: clean, noisy, empty and malformed outputs."""

from __future__ import annotations

import dataclasses

import jsonschema
import pytest

from lune.data.records import ATTACK_TYPES, CANDIDATE_KINDS
from lune.generators.strategies import STRATEGY_BY_KIND, attack_strategy, strategies_for
from lune.generators.strategies.counterfactual import COUNTERFACTUAL
from lune.generators.strategies.paraphrase import PARAPHRASE
from lune.generators.strategies.parsing import load_json, parse_output
from lune.generators.strategies.refusal import REFUSAL

FACT = {
    "fact_id": "f1",
    "question": "In which city and country was Basil Mahfouz Al-Kuwaiti born?",
    "answer": "Basil Mahfouz Al-Kuwaiti was born in Kuwait City, Kuwait.",
    "key_span": "Kuwait City, Kuwait",
    "subject": "Basil Mahfouz Al-Kuwaiti",
}
ALL = [COUNTERFACTUAL, PARAPHRASE, REFUSAL, *(attack_strategy(t) for t in ATTACK_TYPES)]


# -- parse_output ---------------------------------------------------------------------------------


def test_clean_json() -> None:
    assert parse_output('{"answer": "He was born in Cairo, Egypt."}', "answer", expect_json=True) == (
        ["He was born in Cairo, Egypt."],
        [],
    )


def test_noisy_json_in_fence_and_chatter() -> None:
    text = 'Sure! Here it is:\n```json\n{"answer": "Born in Lima, Peru."}\n```\nHope this helps.'
    assert parse_output(text, "answer", expect_json=True) == (["Born in Lima, Peru."], [])
    fenced = '```json\n{"question": "Where was he born?"}\n```'
    assert parse_output(fenced, "question", expect_json=True) == (["Where was he born?"], [])


def test_json_lists_and_plural_keys() -> None:
    texts, reasons = parse_output('{"answers": ["A city.", "B town.", "A city."]}', "answer", expect_json=True)
    assert texts == ["A city.", "B town."] and reasons == []
    texts, _ = parse_output('[{"answer": "One."}, {"answer": "Two."}]', "answer", expect_json=True)
    assert texts == ["One.", "Two."]
    texts, _ = parse_output('["x is y.", "x is z."]', "answer", expect_json=True)
    assert texts == ["x is y.", "x is z."]


def test_json_with_control_characters_is_read_and_cleaned() -> None:
    texts, reasons = parse_output('{"answer":"Born\x19 in Oslo"}', "answer", expect_json=True)
    assert texts == ["Born in Oslo"] and reasons == []


@pytest.mark.parametrize("text", [None, "", "   \n\t "])
def test_empty(text: str | None) -> None:
    assert parse_output(text, "answer", expect_json=True) == ([], ["empty output"])
    assert parse_output(text, "answer", expect_json=False) == ([], ["empty output"])


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"answer": "unterminated', "malformed JSON"),
        ("just words, no JSON at all", "malformed JSON"),
        ('{"answer": 42}', "'answer' is not a string"),
        ('{"other": 1, "more": 2}', "JSON without a 'answer' string"),
        ('{"answer": ""}', "empty after cleaning"),
        ('{"answer": "' + "x" * 1200 + '"}', "longer than"),
    ],
)
def test_malformed_json_gives_reasons_not_exceptions(text: str, reason: str) -> None:
    texts, reasons = parse_output(text, "answer", expect_json=True)
    assert texts == []
    assert len(reasons) == 1 and reason in reasons[0]


def test_plain_text_labels_quotes_and_first_line() -> None:
    assert parse_output(
        ' False answer: "He was born in Oslo, Norway."\nQuestion: next', "answer", expect_json=False
    ) == (["He was born in Oslo, Norway."], [])
    assert parse_output("Answer:\nParis", "answer", expect_json=False) == (["Paris"], [])


def test_plain_numbered_list_gives_one_candidate_per_item() -> None:
    text = "1. Born in Oslo.\n2) Born in Rome.\n- Born in Lima."
    assert parse_output(text, "answer", expect_json=False)[0] == ["Born in Oslo.", "Born in Rome.", "Born in Lima."]


def test_plain_mode_still_reads_json_when_the_model_writes_it() -> None:
    assert parse_output('{"question": "Where was he born?"}', "question", expect_json=False)[0] == [
        "Where was he born?"
    ]


def test_copy_of_the_original_is_rejected() -> None:
    texts, reasons = parse_output(
        '{"answer": "basil mahfouz al-kuwaiti was born in KUWAIT CITY, Kuwait"}',
        "answer",
        expect_json=True,
        original=FACT["answer"],
    )
    assert texts == [] and reasons == ["repeats the original text"]


def test_load_json_skips_unbalanced_prefix() -> None:
    obj, error = load_json('noise { not json } then {"answer": "ok"}')
    assert obj == {"answer": "ok"} and error is None


# -- strategies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: f"{s.name}-{s.attack_type}")
def test_every_strategy_builds_and_parses(strategy) -> None:
    request = strategy.build_request(FACT, n=3, temperature=0.8, top_p=0.9, max_tokens=40, seed=5, structured=True)
    assert request.n == 3 and request.seed == 5 and request.stop == []
    assert request.metadata["fact_id"] == "f1" and request.metadata["attack_type"] == strategy.attack_type
    assert FACT["question"] in request.prompt and request.prompt.rstrip().endswith("JSON:")
    assert request.messages[0]["role"] == "system" and FACT["question"] in request.messages[1]["content"]
    good = {strategy.field: "A different text entirely."}
    jsonschema.validate(good, request.json_schema)  # the schema accepts what the parser reads
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"wrong": 1}, request.json_schema)
    import json

    assert strategy.parse(FACT, json.dumps(good), structured=True) == (["A different text entirely."], [])
    assert strategy.parse(FACT, "{broken", structured=True)[1][0].startswith("malformed JSON")
    plain = strategy.build_request(FACT, n=1, temperature=0, top_p=1, max_tokens=40, seed=None, structured=False)
    assert plain.json_schema is None and plain.stop and plain.prompt.rstrip().endswith(strategy.cue)
    assert strategy.parse(FACT, f"{strategy.cue} Another text.\nmore", structured=False) == (["Another text."], [])


def test_counterfactual_prompt_names_the_key_span_and_its_type() -> None:
    prompt, _ = COUNTERFACTUAL.render(FACT, structured=False)
    assert "Kuwait City, Kuwait" in prompt and "(a place)" in prompt


def test_prompt_versions_are_stable_distinct_and_follow_the_template() -> None:
    versions = {s.prompt_version for s in ALL}
    assert len(versions) == len(ALL)
    assert COUNTERFACTUAL.prompt_version == dataclasses.replace(COUNTERFACTUAL).prompt_version
    edited = dataclasses.replace(COUNTERFACTUAL, template=COUNTERFACTUAL.template + " Be brief.")
    assert edited.prompt_version != COUNTERFACTUAL.prompt_version


def test_strategies_for_kinds() -> None:
    names = [(s.kind, s.attack_type) for s in strategies_for(["negative", "attack"], ["role_play", "cross_lingual"])]
    assert names == [("negative", None), ("attack", "role_play"), ("attack", "cross_lingual")]
    assert set(STRATEGY_BY_KIND) | {"attack"} == set(CANDIDATE_KINDS)
    with pytest.raises(ValueError, match="unknown candidate kind"):
        strategies_for(["negatives"])
    with pytest.raises(ValueError, match="unknown attack type"):
        attack_strategy("jailbreak")
