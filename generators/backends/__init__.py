"""Generator backends behind one protocol (``generators.base.Generator``), named by config.

    >>> gen = make_backend("transformers", model="runs/default/model")
    >>> gen.greedy(["Question: Who wrote Carrie?\\nAnswer:"], max_tokens=32)

Every backend imports its heavy library (torch, vllm, openai) inside ``load`` or a method, so this
module imports anywhere. Besides the protocol, each class says how its output is used:
``raw_output`` (texts are final candidates, no strategy parser: rules, dataset),
``expands_attack_types`` (one request per attack family) and ``thread_safe`` (may be called from
several threads at once; otherwise the flow serialises calls in a process); and how the generate
config builds it: ``options_model`` (its own section, ``generate.<name>``, whose fields are its
keyword options under the same names), ``shared_settings`` (the fields of the generate config
itself it takes, e.g. ``model``) and ``identity(options)`` (what of its options shapes its output:
it enters batch ids).
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
from lune.generators.config import GenerateConfig

# The registry: a config names a backend, its class says the name.
BACKENDS: dict[str, type] = {
    cls.name: cls for cls in (RulesGenerator, DatasetGenerator, TransformersGenerator, VLLMGenerator, OpenAIGenerator)
}


def backend_class(name: str) -> type:
    """The backend class registered as ``name``."""
    if name not in BACKENDS:
        raise LuneError(f"unknown generator backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def backend_options(config: GenerateConfig) -> dict[str, Any]:
    """The configured backend's keyword options: the shared settings it takes from the generate
    config, then every field of its own section (``generate.transformers``, ...)."""
    cls = backend_class(config.backend)
    options = {name: getattr(config, name) for name in cls.shared_settings}
    if cls.options_model is not None:
        options.update(getattr(config, cls.name).model_dump())
    return options


def make_backend(name: str, **options: Any) -> Any:
    """An instance of backend ``name`` built with ``options`` (not loaded yet: call ``load``)."""
    cls = backend_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        known = [p for p in accepted if p != "self"]
        raise LuneError(f"backend {name!r} has no option(s) {unknown}; its options: {', '.join(known)}")
    try:
        return cls(**options)
    except TypeError as err:
        raise LuneError(f"backend {name!r}: {err}") from None


__all__ = [
    "BACKENDS",
    "DatasetGenerator",
    "OpenAIGenerator",
    "RulesGenerator",
    "TransformersGenerator",
    "VLLMGenerator",
    "backend_class",
    "backend_options",
    "make_backend",
]
