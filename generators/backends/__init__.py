"""Generator backends behind one protocol (``generators.base.Generator``), named by config.

    >>> gen = make_backend("transformers", model="runs/default/model")
    >>> gen.greedy(["Question: Who wrote Carrie?\\nAnswer:"], max_tokens=32)

Every backend imports its heavy library (torch, vllm, httpx) inside ``load`` or a method, so this
module imports anywhere. Besides the protocol, each class says how its output is used:
``raw_output`` (texts are final candidates, no strategy parser: rules, dataset),
``expands_attack_types`` (one request per attack family) and ``thread_safe`` (may be called from
several threads at once; otherwise the flow serialises calls in a process).
"""

from __future__ import annotations

import inspect
from typing import Any

from lune.data.errors import LuneError
from lune.generators.backends.dataset_backend import DatasetGenerator
from lune.generators.backends.openai_backend import OpenAIGenerator
from lune.generators.backends.rules_backend import RulesGenerator
from lune.generators.backends.transformers_backend import TransformersGenerator
from lune.generators.backends.vllm_backend import VLLMGenerator

# The registry: a config names a backend, this maps the name to its class.
BACKENDS: dict[str, type] = {
    "rules": RulesGenerator,
    "dataset": DatasetGenerator,
    "transformers": TransformersGenerator,
    "vllm": VLLMGenerator,
    "openai": OpenAIGenerator,
}
MODEL_BACKENDS = ("transformers", "vllm", "openai")


def make_backend(name: str, **options: Any) -> Any:
    """An instance of backend ``name`` built with ``options`` (not loaded yet: call ``load``)."""
    if name not in BACKENDS:
        raise LuneError(f"unknown generator backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    cls = BACKENDS[name]
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        known = [p for p in accepted if p != "self"]
        raise LuneError(f"backend {name!r} has no option(s) {unknown}; its options: {', '.join(known)}")
    try:
        return cls(**options)
    except TypeError as err:
        raise LuneError(f"backend {name!r}: {err}") from None


__all__ = ["BACKENDS", "MODEL_BACKENDS", "DatasetGenerator", "OpenAIGenerator", "RulesGenerator",
           "TransformersGenerator", "VLLMGenerator", "make_backend"]
