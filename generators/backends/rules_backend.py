"""The ``rules`` backend: candidates without a model, deterministic under a seed.

It reads the fact that each request carries in ``metadata["fact"]`` (every strategy puts it there)
and ignores the prompt: counterfactual negatives swap the key span for a same-type span of another
fact of the corpus (``generators.rules.spans``), paraphrases, attacks and refusals come from
templates (``generators.rules.templates``). The corpus is given as a :class:`SpanBank`; without
one, the bank is built from the facts of the requests themselves.

    >>> gen = RulesGenerator(bank=SpanBank.from_facts(facts))
    >>> gen.generate([COUNTERFACTUAL.build_request(fact, n=4, ..., seed=7, structured=False)])
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar

from lune.generators.base import Generation, GenerationRequest
from lune.generators.rules.spans import SpanBank, counterfactuals, span_type
from lune.generators.rules.templates import attacks, paraphrases, refusals, rules_version


class RulesGenerator:
    """Model-free generator (see the module docstring). ``bank``: a :class:`SpanBank` or its dict."""

    name = "rules"
    raw_output = True  # texts are final candidates: no strategy parser
    expands_attack_types = True
    thread_safe = True
    options_model = None  # no section of its own; the bank comes from the store
    shared_settings: ClassVar[tuple[str, ...]] = ("seed",)

    def __init__(self, bank: SpanBank | Mapping[str, Any] | None = None, seed: int = 0):
        self.bank = SpanBank.from_dict(bank) if isinstance(bank, Mapping) else bank
        self.seed = seed

    @staticmethod
    def identity(options: Mapping[str, Any]) -> dict[str, Any]:
        """The span bank shapes the output (the seed enters each request's seed instead)."""
        bank = options.get("bank")
        return {"bank": SpanBank.from_dict(bank).bank_id() if bank is not None else None}

    @property
    def model_name(self) -> str:
        return "rules"

    def load(self) -> None:
        """Nothing to load."""

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        bank = self.bank
        if bank is None:
            facts = {r.metadata["fact"]["fact_id"]: r.metadata["fact"] for r in requests if "fact" in r.metadata}
            bank = SpanBank.from_facts(facts.values())
        return [self._one(request, bank) for request in requests]

    def _one(self, request: GenerationRequest, bank: SpanBank) -> Generation:
        meta = request.metadata
        fact = meta.get("fact")
        if not fact:
            return Generation(request, [], errors=["the rules backend needs metadata['fact'] on each request"])
        strategy, attack_type = meta.get("strategy"), meta.get("attack_type")
        rng = random.Random(request.seed if request.seed is not None else self.seed)
        n = request.n
        if strategy == "counterfactual":
            kind = span_type(fact.get("key_span") or "", fact["question"], fact["answer"])
            texts, errors = counterfactuals(fact["answer"], fact.get("key_span") or "", kind, bank, rng, n)
        elif strategy == "paraphrase":
            texts, errors = paraphrases(fact, rng, n)
        elif strategy == "attack":
            texts, errors = attacks(fact, attack_type or "", bank, rng, n)
        elif strategy == "refusal":
            texts, errors = refusals(fact, rng, n)
        else:
            return Generation(request, [], errors=[f"the rules backend has no rule for strategy {strategy!r}"])
        version = rules_version(strategy, attack_type)
        return Generation(request, texts, extras=[{"prompt_version": version}] * len(texts), errors=errors)
