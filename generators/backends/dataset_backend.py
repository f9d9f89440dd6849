"""The ``dataset`` backend: negatives, paraphrases and attacks the benchmark already ships, as candidates.

Probes already in the store become candidates with their provenance (``source_probe_id``), so they
are scored and curated exactly like generated ones:

    ============================  ==========  =====================================
    probe kind                    candidate   source
    ============================  ==========  =====================================
    ``perturbed_answer``          negative    TOFU ``perturbed_answer``
    ``negative_text``             negative    RWKU ``negative.json``
    ``paraphrased_question``      paraphrase  TOFU ``paraphrased_question``
    ``adversarial``               attack      RWKU ``forget_level3`` (with its attack type)
    ============================  ==========  =====================================

The probes travel with each fact in ``metadata["fact"]["probes"]`` (the flow reads them from the
store, see ``data.generation_queries.probes_for_facts``); the prompt is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from lune.data.records import normalize_attack_type
from lune.generators.base import Generation, GenerationRequest

PROBE_KIND_TO_CANDIDATE: dict[str, str] = {
    "perturbed_answer": "negative",
    "negative_text": "negative",
    "paraphrased_question": "paraphrase",
    "adversarial": "attack",
}


class DatasetGenerator:
    """Turns a fact's dataset probes of the requested kind into candidate texts."""

    name = "dataset"
    raw_output = True
    expands_attack_types = False  # one request per fact and kind returns every attack family
    thread_safe = True
    options_model = None
    shared_settings: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def identity(options: Mapping[str, Any]) -> dict[str, Any]:
        """Nothing but the probes in the store shapes the output."""
        return {}

    @property
    def model_name(self) -> str:
        return "dataset"

    def load(self) -> None:
        """Nothing to load."""

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        out = []
        for request in requests:
            fact = request.metadata.get("fact") or {}
            kind = request.metadata.get("kind")
            wanted = request.metadata.get("attack_type")
            texts, extras = [], []
            for probe in fact.get("probes") or ():
                if PROBE_KIND_TO_CANDIDATE.get(probe["kind"]) != kind:
                    continue
                attack_type = normalize_attack_type(probe.get("attack_type")) if kind == "attack" else None
                if wanted and attack_type != wanted:
                    continue
                text = (probe.get("text") or "").strip()
                if not text:
                    continue
                texts.append(text)
                extras.append(
                    {
                        "source_probe_id": probe["probe_id"],
                        "attack_type": attack_type,
                        "strategy": f"dataset:{probe['kind']}",
                        "prompt_version": None,
                    }
                )
            out.append(Generation(request, texts, extras=extras))
        return out
