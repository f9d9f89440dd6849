"""Backends built from their config sections, and stored ids that do not move.

The candidate ids, batch ids and prompt versions that a config makes are pinned to the values
computed on commit 8e6858d (before the backends were built from their config sections and
GenerationSettings was dropped), so a refactor that changes them fails here. A changed id is not a
bug in itself (a new prompt version should change it), but it makes every store generate its
candidates again: change a pinned value only on purpose, and say so."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from _generate_data import write_sample_store

from lune.data import generation_queries as queries
from lune.data.ids import content_id
from lune.data.store import Store
from lune.flows.config import load_config
from lune.generators.backends import BACKENDS, backend_options, make_backend
from lune.generators.config import GenerateConfig
from lune.generators.generate import backend_spec, generate_batch, generation_identity, plan_batches
from lune.generators.rules.spans import SpanBank


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_a_backend_takes_its_config_section_as_keyword_options(name: str) -> None:
    cls = BACKENDS[name]
    accepted = set(inspect.signature(cls.__init__).parameters)
    section = set(cls.options_model.model_fields) if cls.options_model is not None else set()
    assert section | set(cls.shared_settings) <= accepted
    assert set(cls.shared_settings) <= set(GenerateConfig.model_fields)


def test_backends_are_built_from_the_generate_config() -> None:
    config = GenerateConfig(backend="transformers", model="m", adapter="a", transformers={"batch_size": 3})
    gen = make_backend(config.backend, **backend_options(config))
    assert (gen.model_path, gen.adapter, gen.batch_size) == ("m", "a", 3)
    config = GenerateConfig(backend="openai", model="m", openai={"base_urls": ["http://h:1"], "concurrency": 7})
    gen = make_backend(config.backend, **backend_options(config))
    assert (gen.base_urls, gen.model, gen.concurrency) == (["http://h:1/v1"], "m", 7)
    assert backend_options(GenerateConfig(seed=5)) == {"seed": 5}  # rules: the bank comes with the spec


def test_the_embedded_defaults_candidates_keep_their_ids(tmp_path: Path) -> None:
    config = load_config().generate
    db = write_sample_store(tmp_path / "sample.duckdb")
    with Store.open(db) as store:
        facts = queries.select_facts(store, split=config.split, where=config.where)
        bank = SpanBank.from_facts(queries.corpus_facts(store, {f["corpus"] for f in facts}))
        probes = queries.probes_for_facts(store, [f["fact_id"] for f in facts])
    for fact in facts:
        fact["probes"] = probes.get(fact["fact_id"], [])
    spec = backend_spec(config, bank=bank)
    batches = plan_batches(facts, config.batch_size, spec, config)
    candidates = [
        c
        for b in batches
        for c in generate_batch(b.facts, spec, config.model_dump(), batch_id=b.batch_id)["candidates"]
    ]
    assert (len(facts), len(batches), len(candidates)) == (43, 1, 1166)
    assert content_id(sorted(b.batch_id for b in batches))[:12] == "61f779dda639"
    assert content_id(sorted(c["candidate_id"] for c in candidates))[:12] == "3a057706a975"
    versions = {(c["strategy"], c["prompt_version"]) for c in candidates}
    assert content_id(sorted(versions, key=str))[:12] == "ca2d7c334c9f"


def test_each_backends_generation_identity_is_unchanged() -> None:
    bank = SpanBank.from_facts([{"fact_id": "f", "question": "Who?", "answer": "Ann Lee", "key_span": "Ann Lee"}])
    # Model backends' ids moved with `prompt_layout` (a new output setting) and the attack families'
    # rephrase prompt (a new prompt version): stores regenerate those batches, as they must.
    pinned = {
        "cde67d892f4544e8473b": dict(
            backend="transformers", model="m", transformers={"dtype": "bfloat16", "batch_size": 3}
        ),
        "42ebaf0e28b924940785": dict(backend="vllm", model="m", adapter="a", use_chat_template=False, n=8),
        "6647129823251fd9b5d4": dict(backend="openai", model="m", openai={"base_urls": ["http://a:1"], "chat": True}),
        "081a669611c14eaf6572": dict(backend="dataset", kinds=["attack"]),
        "4d713d13d66b1c727566": dict(backend="rules", seed=3),
    }
    for identity, settings in pinned.items():
        config = GenerateConfig(**settings)
        spec = backend_spec(config, bank=bank if config.backend == "rules" else None)
        assert generation_identity(spec, config) == identity, config.backend
