"""The generator protocol: every backend (vllm, openai, transformers, rules, dataset) is a class
with ``load()``, ``model_name`` and ``generate(requests)``; heavy imports happen inside ``load`` so
that importing ``generators`` needs no GPU and no vLLM.

Strategies (``generators/strategies``) build :class:`GenerationRequest` s from facts and parse the
:class:`Generation` s back into candidates; backends know nothing of facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to complete ``n`` times.

    ``prompt`` is plain text; ``messages`` (chat format) is used instead when the backend and model
    support a chat template. ``json_schema`` asks for structured output where the backend can.
    ``metadata`` travels untouched to the result (fact ids, strategy names, ...).
    """

    prompt: str
    messages: list[dict[str, str]] | None = None
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 64
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    json_schema: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def sampling(self) -> dict[str, Any]:
        """The sampling parameters, as stored on each candidate."""
        return {
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "stop": list(self.stop),
            "json_schema": self.json_schema is not None,
        }


@dataclass(frozen=True)
class Generation:
    """The ``n`` texts produced for one request (same order as the requests).

    Optional, for backends whose texts are final candidates rather than model output (``rules``,
    ``dataset``): ``extras`` holds one dict per text with fields that override the request's
    (``prompt_version``, ``attack_type``, ``source_probe_id``, ``strategy``); ``errors`` says why
    the backend could not make (all of) what was asked, and becomes ``rejections`` rows.
    """

    request: GenerationRequest
    texts: list[str]
    extras: list[dict[str, Any]] | None = None
    errors: list[str] = field(default_factory=list)


@runtime_checkable
class Generator(Protocol):
    """What every backend implements."""

    @property
    def model_name(self) -> str:
        """Model identifier stored on every candidate (a path, a hub id, or ``rules``)."""
        ...

    def load(self) -> None:
        """Import heavy libraries and load the model; idempotent."""
        ...

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Complete every request; one :class:`Generation` per request, in order."""
        ...
