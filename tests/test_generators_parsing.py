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


# -- prompt layouts -------------------------------------------------------------------------------


def test_few_shot_request_is_the_two_shot_pattern_cut_at_the_newline() -> None:
    from lune.generators.strategies.layouts import FEW_SHOT_STOP

    request = COUNTERFACTUAL.build_request(
        FACT, n=2, temperature=0.9, top_p=0.95, max_tokens=40, seed=3, structured=True, layout="few_shot"
    )
    blocks = request.prompt.split("\n\n")
    assert len(blocks) == 3  # two worked examples, then the fact left open
    for block in blocks[:2]:
        q, true, false = block.split("\n")
        assert q.startswith("Q: ") and true.startswith("True: ") and false.startswith("False: ")
        assert false[len("False: ") :] != true[len("True: ") :]
    assert blocks[2] == f"Q: {FACT['question']}\nTrue: {FACT['answer']}\nFalse:"
    # plain text whatever `structured` says: no messages, no schema, one line back
    assert request.messages is None and request.json_schema is None and request.stop == FEW_SHOT_STOP
    assert request.metadata["layout"] == "few_shot"
    assert request.metadata["prompt_version"] == COUNTERFACTUAL.few_shot_version != COUNTERFACTUAL.prompt_version
    # a copy of a worked example (SmolLM2 repeats the prompt) is refused, with its reason
    copy = COUNTERFACTUAL.few_shot_examples[1]["output"]
    assert COUNTERFACTUAL.parse(FACT, f" {copy}", structured=False) == ([], ["copies a worked example"])
    # what SmolLM2 writes after "False:" is read as one candidate
    assert COUNTERFACTUAL.parse(FACT, " Basil Mahfouz Al-Kuwaiti was born in Cairo, Egypt.", structured=False) == (
        ["Basil Mahfouz Al-Kuwaiti was born in Cairo, Egypt."],
        [],
    )


def test_paraphrase_and_refusal_have_few_shot_layouts_and_attacks_keep_instruct() -> None:
    para = PARAPHRASE.build_request(
        FACT, n=1, temperature=0, top_p=1, max_tokens=40, seed=None, structured=True, layout="few_shot"
    )
    assert para.prompt.endswith(f"Q: {FACT['question']}\nSame question, other words:")
    assert FACT["answer"] not in para.prompt  # a paraphrase is of the question alone
    refusal = REFUSAL.build_request(
        FACT, n=1, temperature=0, top_p=1, max_tokens=40, seed=None, structured=False, layout="few_shot"
    )
    assert refusal.prompt.endswith(f"Q: {FACT['question']}\nA:") and "don't know" in refusal.prompt
    attack = attack_strategy("role_play")
    request = attack.build_request(
        FACT, n=1, temperature=0, top_p=1, max_tokens=40, seed=None, structured=True, layout="few_shot"
    )
    assert request.metadata["layout"] == "instruct" and request.json_schema is not None
    assert request.metadata["prompt_version"] == attack.prompt_version == attack.prompt_version_for("few_shot")


def test_instruct_layout_is_unchanged_and_versions_follow_the_examples() -> None:
    request = COUNTERFACTUAL.build_request(
        FACT, n=1, temperature=0, top_p=1, max_tokens=40, seed=None, structured=True, layout="instruct"
    )
    assert request.prompt.endswith("JSON:") and request.messages[0]["role"] == "system"
    assert request.metadata["prompt_version"] == COUNTERFACTUAL.prompt_version
    examples = (*COUNTERFACTUAL.few_shot_examples[:1], {**COUNTERFACTUAL.few_shot_examples[1], "output": "Other."})
    edited = dataclasses.replace(COUNTERFACTUAL, few_shot_examples=examples)
    assert edited.few_shot_version != COUNTERFACTUAL.few_shot_version
    assert edited.prompt_version == COUNTERFACTUAL.prompt_version  # the instruct prompt did not change


def test_resolve_layout_by_model_size() -> None:
    from lune.generators.strategies.layouts import resolve_layout

    assert resolve_layout("auto", 134_515_008) == "few_shot"  # SmolLM2-135M
    assert resolve_layout("auto", 7_000_000_000) == "instruct"
    assert resolve_layout("auto", None) == "instruct"  # a served model: size unknown
    assert resolve_layout("few_shot", 7_000_000_000) == "few_shot"
    assert resolve_layout("instruct", 1000) == "instruct"
    with pytest.raises(ValueError, match="unknown prompt layout"):
        resolve_layout("chat", None)


def test_parameters_are_counted_from_safetensors_headers(tmp_path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    from lune.generators.strategies.layouts import model_parameters, safetensors_parameters

    assert safetensors_parameters(tmp_path) is None
    save_file({"a": np.zeros((3, 4), dtype=np.float32), "b": np.zeros(5, dtype=np.float16)}, tmp_path / "x.safetensors")
    save_file({"c": np.zeros((2, 2, 2), dtype=np.float32)}, tmp_path / "y.safetensors")
    assert safetensors_parameters(tmp_path) == 12 + 5 + 8
    assert model_parameters(str(tmp_path)) == 25
    assert model_parameters("served-model-name") is None and model_parameters(None) is None


class _SizedScripted:
    """A backend of the protocol that answers every request with one fixed line, of a given size."""

    name = "scripted"
    model_name = "scripted-model"
    raw_output = False
    expands_attack_types = True
    thread_safe = True

    def __init__(self, parameters: int | None, text: str):
        self._parameters, self.text, self.requests = parameters, text, []

    def parameters(self) -> int | None:
        return self._parameters

    def load(self) -> None:
        pass

    def generate(self, requests):
        from lune.generators.base import Generation

        self.requests.extend(requests)
        return [Generation(r, [self.text] * r.n) for r in requests]


def test_run_backend_lays_prompts_out_by_model_size() -> None:
    from lune.generators.config import GenerateConfig
    from lune.generators.generate import prompt_versions, run_backend

    settings = GenerateConfig(kinds=["negative", "paraphrase"], n=2, include_dataset=False)
    small = _SizedScripted(135_000_000, " He was born in Cairo, Egypt.")
    out = run_backend([FACT], small, settings)
    assert all(r.json_schema is None and r.stop == ["\n"] for r in small.requests)
    assert {c["prompt_version"] for c in out["candidates"]} == {
        COUNTERFACTUAL.few_shot_version,
        PARAPHRASE.few_shot_version,
    }
    assert {c["text"] for c in out["candidates"]} == {"He was born in Cairo, Egypt."}
    large = _SizedScripted(7_000_000_000, '{"answer": "He was born in Cairo, Egypt."}')
    out = run_backend([FACT], large, settings)
    assert all(r.json_schema is not None for r in large.requests)
    assert {c["prompt_version"] for c in out["candidates"]} == {
        COUNTERFACTUAL.prompt_version,
        PARAPHRASE.prompt_version,
    }
    forced = _SizedScripted(7_000_000_000, "Born in Oslo.")
    run_backend([FACT], forced, settings.model_copy(update={"prompt_layout": "few_shot"}))
    assert all(r.json_schema is None for r in forced.requests)
    # the batch identity's prompt versions follow the configured layout
    assert prompt_versions(settings.model_copy(update={"prompt_layout": "few_shot"}), "openai") == {
        "counterfactual": COUNTERFACTUAL.few_shot_version,
        "paraphrase": PARAPHRASE.few_shot_version,
    }
    assert prompt_versions(settings, "openai")["counterfactual"] == COUNTERFACTUAL.prompt_version


# -- the few-shot judge ---------------------------------------------------------------------------


def test_few_shot_judge_prompt_and_verdict_words() -> None:
    from lune.generators.scorers.contradiction import (
        JUDGE_VERDICTS,
        judge_few_shot_request,
        parse_verdict,
        parse_word_verdict,
    )

    request = judge_few_shot_request(FACT["question"], FACT["answer"], "He was born in Cairo, Egypt.")
    blocks = request.prompt.split("\n\n")
    shown = {b.rsplit("Verdict: ", 1)[1].strip('"') for b in blocks[:-1]}
    assert shown == set(JUDGE_VERDICTS)  # one worked example (at least) per verdict
    assert blocks[-1] == (
        f"Q: {FACT['question']}\nTrue: {FACT['answer']}\nCandidate: He was born in Cairo, Egypt.\nVerdict:"
    )
    # the verdict is a JSON string of the three words: vLLM constrains the judge to them
    assert request.json_schema == {"type": "string", "enum": list(JUDGE_VERDICTS)} and request.temperature == 0
    jsonschema.validate("restates", request.json_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("maybe", request.json_schema)
    assert parse_word_verdict(" contradicts") == "contradicts"
    assert parse_word_verdict(' "Restates".') == "restates"
    assert parse_word_verdict(" unrelated because") == "unrelated"
    assert parse_word_verdict('\n"contradicts"\nQ: next') == "contradicts"
    assert parse_word_verdict(" maybe") is None and parse_word_verdict("") is None
    assert parse_word_verdict("\nTrue: The full name") is None  # SmolLM2 unconstrained: no verdict
    assert parse_verdict('{"verdict": "contradicts"}') == "contradicts" and parse_verdict("contradicts") is None


def test_judge_layout_and_version(tmp_path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    from lune.generators.config import JudgeConfig, ScoreConfig
    from lune.generators.scorers.contradiction import (
        JUDGE_FEW_SHOT_VERSION,
        JUDGE_PROMPT_VERSION,
        Contradiction,
        judge_layout,
    )

    save_file({"w": np.zeros((10, 10), dtype=np.float32)}, tmp_path / "model.safetensors")
    small = JudgeConfig(backend="vllm", model=str(tmp_path))
    assert judge_layout(small) == "few_shot"
    assert judge_layout(small.model_copy(update={"prompt_layout": "instruct"})) == "instruct"
    assert judge_layout(JudgeConfig(backend="openai", model="served")) == "instruct"
    assert Contradiction.version(ScoreConfig(judge=small)).startswith(JUDGE_FEW_SHOT_VERSION + ":vllm:")
    served = ScoreConfig(judge=JudgeConfig(backend="openai", model="served"))
    assert Contradiction.version(served) == f"{JUDGE_PROMPT_VERSION}:openai:served"
