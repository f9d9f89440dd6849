"""The stage logic (generators/generate.py): requests, ids, parsing into rows, rejections, batches."""

from __future__ import annotations

import pytest
from _generate_data import fact_rows

from lune.data.errors import LuneError
from lune.generators.backends import BACKENDS, make_backend
from lune.generators.base import Generation, GenerationRequest, Generator
from lune.generators.config import GenerateConfig
from lune.generators.generate import (
    backend_spec,
    build_requests,
    generate_batch,
    generation_identity,
    plan_batches,
    request_seed,
    run_backend,
)
from lune.generators.rules.spans import SpanBank
from lune.generators.strategies import strategies_for


class ScriptedModel:
    """Test double standing in for a language model's raw text (the boundary a parser faces): it
    answers each request with the next scripted outputs. The parsing and row building under test
    are the real ones."""

    name = "scripted"
    raw_output = False
    expands_attack_types = True
    thread_safe = True

    def __init__(self, outputs: list[str]):
        self.outputs = outputs

    @property
    def model_name(self) -> str:
        return "scripted-model"

    def load(self) -> None:
        pass

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        return [
            Generation(r, [self.outputs[(i * r.n + j) % len(self.outputs)] for j in range(r.n)])
            for i, r in enumerate(requests)
        ]


@pytest.fixture(scope="module")
def facts() -> list[dict]:
    return fact_rows()[:12]


def test_backends_satisfy_the_protocol() -> None:
    assert isinstance(make_backend("rules"), Generator)
    assert isinstance(make_backend("dataset"), Generator)
    assert isinstance(make_backend("transformers", model="m"), Generator)
    assert isinstance(make_backend("vllm", model="m"), Generator)
    assert isinstance(make_backend("openai", base_urls="http://x:1", model="m"), Generator)
    assert set(BACKENDS) == {"rules", "dataset", "transformers", "vllm", "openai"}


def test_make_backend_errors_name_the_problem() -> None:
    with pytest.raises(LuneError, match="unknown generator backend 'llama'"):
        make_backend("llama")
    with pytest.raises(LuneError, match="has no option"):
        make_backend("rules", model="x")
    with pytest.raises(LuneError, match="at least one base URL"):
        make_backend("openai", base_urls=[])


def test_request_seeds_are_stable_and_distinct(facts) -> None:
    settings = GenerateConfig(kinds=("negative", "attack"), attack_types=("role_play", "cross_lingual"))
    requests = build_requests(facts, strategies_for(settings.kinds, settings.attack_types), settings)
    assert len(requests) == 3 * len(facts)
    seeds = [r.seed for r in requests]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**31 for s in seeds)
    assert seeds == [
        r.seed for r in build_requests(facts, strategies_for(settings.kinds, settings.attack_types), settings)
    ]
    assert request_seed(0, "f", "attack", "role_play") != request_seed(1, "f", "attack", "role_play")


def test_parsed_rows_and_rejections(facts) -> None:
    outputs = ['{"answer": "A false answer."}', "not json at all", "", '{"answer": "A false answer."}']
    settings = GenerateConfig(kinds=("negative",), n=4, include_dataset=False)
    out = run_backend(facts, ScriptedModel(outputs), settings, run_id="run1", batch_id="b1")
    assert out["stats"]["outputs"] == 4 * len(facts)
    assert len(out["candidates"]) == 2 * len(facts)  # identical rows are kept for the store to merge
    ids = {c["candidate_id"] for c in out["candidates"]}
    assert len(ids) == len(facts)  # same fact, text, model, prompt and seed: one id
    row = out["candidates"][0]
    assert row["generator"] == "scripted" and row["model"] == "scripted-model" and row["run_id"] == "run1"
    assert row["batch_id"] == "b1" and row["strategy"] == "counterfactual" and row["kind"] == "negative"
    assert row["sampling"]["temperature"] == settings.temperature and row["sampling"]["json_schema"] is True
    reasons = sorted({r["reason"].split(" (")[0] for r in out["rejections"]})
    assert reasons == ["empty output", "malformed JSON"]
    assert all(r["stage"] == "generate" and r["source"] == "scripted:scripted-model" for r in out["rejections"])
    assert {r["payload"] for r in out["rejections"]} == {"not json at all", ""}


def test_candidate_ids_change_with_what_makes_the_candidate(facts) -> None:
    base = GenerateConfig(kinds=("negative",), n=1, include_dataset=False)
    one = run_backend(facts[:1], ScriptedModel(['{"answer": "X."}']), base)["candidates"][0]["candidate_id"]
    reseeded = base.model_copy(update={"seed": 9})
    two = run_backend(facts[:1], ScriptedModel(['{"answer": "X."}']), reseeded)["candidates"][0]["candidate_id"]
    other_text = run_backend(facts[:1], ScriptedModel(['{"answer": "Y."}']), base)["candidates"][0]["candidate_id"]
    assert len({one, two, other_text}) == 3


def test_plan_batches_ids_are_content_hashes(facts) -> None:
    config = GenerateConfig(batch_size=5)
    spec = backend_spec(config, bank=SpanBank.from_facts(facts))
    settings = config
    batches = plan_batches(list(reversed(facts)), 5, spec, settings)
    assert [len(b.facts) for b in batches] == [5, 5, 2]
    assert [b.fact_ids for b in batches] == [sorted(f["fact_id"] for f in facts)[i : i + 5] for i in (0, 5, 10)]
    assert [b.batch_id for b in batches] == [b.batch_id for b in plan_batches(facts, 5, spec, settings)]
    changed = plan_batches(facts, 5, spec, settings.model_copy(update={"n": 7}))
    assert not {b.batch_id for b in changed} & {b.batch_id for b in batches}
    # Where a batch runs is not what it is: URLs and concurrency stay out of the identity.
    a = GenerateConfig(backend="openai", model="m", openai={"base_urls": ["http://a:1"], "concurrency": 2})
    b = GenerateConfig(backend="openai", model="m", openai={"base_urls": ["http://b:1"], "concurrency": 64})
    assert generation_identity(backend_spec(a), settings) == generation_identity(backend_spec(b), settings)


def test_generate_batch_adds_dataset_candidates(facts) -> None:
    fact = dict(
        facts[0],
        probes=[{"probe_id": "p1", "kind": "perturbed_answer", "text": "A perturbed answer.", "attack_type": None}],
    )
    config = GenerateConfig(kinds=["negative"], n=2)
    spec = backend_spec(config, bank=SpanBank.from_facts(fact_rows()))
    out = generate_batch([fact], spec, config.model_dump(), run_id="r", batch_id="b")
    generators = [c["generator"] for c in out["candidates"]]
    assert generators.count("dataset") == 1 and generators.count("rules") == 2
    assert out["stats"]["by_kind"] == {"negative": 3}
    no_dataset = config.model_copy(update={"include_dataset": False})
    assert all(c["generator"] == "rules" for c in generate_batch([fact], spec, no_dataset)["candidates"])


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="needs `model`"):
        GenerateConfig(backend="vllm")
    with pytest.raises(ValueError, match=r"needs `openai\.base_urls`"):
        GenerateConfig(backend="openai")
    with pytest.raises(ValueError, match="unknown attack type"):
        GenerateConfig(attack_types=["jailbreak"])
    with pytest.raises(ValueError):
        GenerateConfig(kinds=["negatives"])
    with pytest.raises(ValueError):
        GenerateConfig(bakend="rules")
