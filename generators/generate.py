"""The generate stage's logic: facts -> requests -> generations -> parsed candidates -> rows.

No Prefect and no SQL here (the flow, ``flows/generate.py``, wires it; the SQL is in
``data/generation_queries.py``), so every step is a function a test can call directly:

    >>> spec = backend_spec(config, bank=bank)          # plain data: name, options, cache key
    >>> batches = plan_batches(facts, config.batch_size, spec, config)
    >>> out = generate_batch(batches[0].facts, spec, config, run_id="r1", batch_id=batches[0].batch_id)
    >>> out["candidates"][0]["candidate_id"]

``config`` is the :class:`~lune.generators.config.GenerateConfig` (a task in another process gets its
``model_dump()``); of its fields, :data:`OUTPUT_SETTINGS` shape the candidates of a fact whatever
backend runs, and enter batch ids with the backend's identity.

Ids: a candidate's id hashes what makes it that candidate (fact, kind, text, generator, model, prompt
version, seed, attack type, source probe), so a rerun writes nothing twice. A request's seed hashes
the configured seed, the fact and the strategy, so a rerun asks the engine the same question with the
same seed. A batch id hashes its fact ids and everything that shapes its output (backend identity,
settings, prompt versions, the rules' span bank), so a completed batch is recognised on a rerun.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lune.data.ids import content_id
from lune.generators.backends import DatasetGenerator, backend_class, backend_options, make_backend
from lune.generators.base import Generation, GenerationRequest
from lune.generators.config import GenerateConfig
from lune.generators.rules.spans import SpanBank
from lune.generators.rules.templates import rules_version
from lune.generators.strategies import Strategy, strategies_for
from lune.generators.strategies.layouts import model_parameters, resolve_layout

STAGE = "generate"


# The settings that shape the candidates of a fact, whatever backend runs the generation.
OUTPUT_SETTINGS = (
    "kinds",
    "attack_types",
    "n",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "structured",
    "include_dataset",
)


def as_config(config: GenerateConfig | Mapping[str, Any]) -> GenerateConfig:
    """The config itself, or the config a task received as a ``model_dump()``."""
    return config if isinstance(config, GenerateConfig) else GenerateConfig.model_validate(dict(config))


# -- backends ------------------------------------------------------------------------------------


def backend_spec(config: GenerateConfig, *, bank: SpanBank | None = None) -> dict[str, Any]:
    """How to build the configured backend in any process: ``{"name", "options", "identity", "key"}``.

    ``options`` are the backend's keyword options from its config section (:func:`backend_options`),
    with the rules' span bank; model backends get paths and names, never model objects (a task
    builds and caches its own). ``identity`` is what of the backend enters batch ids (the class's
    ``identity``: not URLs, concurrency or devices, so a batch made on another server is the same
    batch); ``key`` caches a built backend per process.
    """
    name = config.backend
    options = backend_options(config)
    if needs_bank(name):
        options["bank"] = bank.to_dict() if bank is not None else None
    identity = {"backend": name, **backend_class(name).identity(options)}
    return {"name": name, "options": options, "identity": identity, "key": content_id(name, options)}


_CACHE: dict[str, tuple[Any, threading.Lock]] = {}
_CACHE_LOCK = threading.Lock()


def cached_backend(spec: Mapping[str, Any]) -> tuple[Any, threading.Lock]:
    """The backend of ``spec``, built and loaded once per process (a model loads once per worker),
    with the lock that serialises calls to a backend that is not thread-safe."""
    key = spec["key"]
    with _CACHE_LOCK:
        if key not in _CACHE:
            backend = make_backend(spec["name"], **spec["options"])
            backend.load()
            _CACHE[key] = (backend, threading.Lock())
        return _CACHE[key]


def clear_backend_cache() -> None:
    """Forget the backends built in this process (tests; freeing a model)."""
    with _CACHE_LOCK:
        _CACHE.clear()


# -- requests ------------------------------------------------------------------------------------


def request_seed(base_seed: int, fact_id: str, strategy: str, attack_type: str | None) -> int:
    """A 31-bit seed per (fact, strategy): stable across runs and batchings."""
    return int(content_id("seed", base_seed, fact_id, strategy, attack_type)[:8], 16) & 0x7FFFFFFF


def build_requests(
    facts: Sequence[Mapping[str, Any]],
    strategies: Sequence[Strategy],
    settings: GenerateConfig,
    *,
    expands_attack_types: bool = True,
    render: bool = True,
    layout: str = "instruct",
) -> list[GenerationRequest]:
    """One request per fact and strategy (per attack family, unless the backend returns all families
    from one request, as ``dataset`` does), laid out as ``layout`` (resolved: instruct / few_shot)."""
    if not expands_attack_types:
        seen: set[str] = set()
        collapsed = []
        for s in strategies:
            if s.kind not in seen:
                seen.add(s.kind)
                collapsed.append(s)
        strategies = collapsed
    requests = []
    for fact in facts:
        for strategy in strategies:
            attack_type = strategy.attack_type if expands_attack_types else None
            request = strategy.build_request(
                fact,
                n=settings.n,
                temperature=settings.temperature,
                top_p=settings.top_p,
                max_tokens=settings.max_tokens,
                seed=request_seed(settings.seed, fact["fact_id"], strategy.name, attack_type),
                structured=settings.structured,
                render=render,
                layout=layout,
            )
            if not expands_attack_types:
                request.metadata["attack_type"] = None
            requests.append(request)
    return requests


# -- rows ----------------------------------------------------------------------------------------


def candidate_id(
    fact_id: str,
    kind: str,
    text: str,
    generator: str,
    model: str | None,
    prompt_version: str | None,
    seed: int | None,
    attack_type: str | None = None,
    source_probe_id: str | None = None,
) -> str:
    return content_id(
        "candidate", fact_id, kind, text, generator, model, prompt_version, seed, attack_type, source_probe_id
    )


def _rejection(
    generator: str, model: str, request: GenerationRequest, reason: str, payload: str | None, run_id: str | None
) -> dict[str, Any]:
    meta = request.metadata
    strategy = meta.get("strategy")
    if meta.get("attack_type"):
        strategy = f"{strategy}:{meta['attack_type']}"
    return {
        "stage": STAGE,
        "source": f"{generator}:{model}",
        "location": meta.get("fact_id"),
        "field": strategy,
        "reason": reason,
        "payload": payload,
        "run_id": run_id,
    }


def rows_from_generations(
    generations: Sequence[Generation],
    strategies: Mapping[tuple[str, str | None], Strategy],
    *,
    generator: str,
    model: str,
    raw_output: bool,
    run_id: str | None,
    batch_id: str | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Candidate rows and rejection rows from a backend's generations; also the count of raw texts."""
    candidates: list[dict[str, Any]] = []
    rejections: list[dict[str, Any]] = []
    outputs = 0
    for generation in generations:
        request = generation.request
        meta = request.metadata
        fact = meta["fact"]
        strategy = strategies[(meta["strategy"], meta.get("attack_type"))]
        for error in generation.errors:
            rejections.append(_rejection(generator, model, request, error, None, run_id))
        sampling = {"n": request.n, "seed": request.seed} if raw_output else request.sampling()
        extras = generation.extras or [{}] * len(generation.texts)
        for text, extra in zip(generation.texts, extras):
            outputs += 1
            if raw_output:
                cleaned = (text or "").strip()
                parsed, reasons = ([cleaned], []) if cleaned else ([], ["empty output"])
            else:
                parsed, reasons = strategy.parse(fact, text, structured=request.json_schema is not None)
            for reason in reasons:
                rejections.append(_rejection(generator, model, request, reason, text, run_id))
            attack_type = extra.get("attack_type", meta.get("attack_type"))
            prompt_version = extra.get("prompt_version", meta.get("prompt_version", strategy.prompt_version))
            source_probe_id = extra.get("source_probe_id")
            seed = None if source_probe_id else request.seed
            for candidate_text in parsed:
                candidates.append(
                    {
                        "candidate_id": candidate_id(
                            fact["fact_id"],
                            strategy.kind,
                            candidate_text,
                            generator,
                            model,
                            prompt_version,
                            seed,
                            attack_type,
                            source_probe_id,
                        ),
                        "fact_id": fact["fact_id"],
                        "kind": strategy.kind,
                        "text": candidate_text,
                        "attack_type": attack_type,
                        "generator": generator,
                        "model": model,
                        "strategy": extra.get("strategy", strategy.name),
                        "prompt_version": prompt_version,
                        "sampling": None if source_probe_id else sampling,
                        "seed": seed,
                        "source_probe_id": source_probe_id,
                        "run_id": run_id,
                        "batch_id": batch_id,
                    }
                )
    return candidates, rejections, outputs


def run_backend(
    facts: Sequence[Mapping[str, Any]],
    backend: Any,
    settings: GenerateConfig,
    *,
    run_id: str | None = None,
    batch_id: str | None = None,
    lock: threading.Lock | None = None,
) -> dict[str, Any]:
    """Generate with one backend for ``facts``: ``{"candidates", "rejections", "stats"}``."""
    strategies = strategies_for(settings.kinds, settings.attack_types)
    expands = getattr(backend, "expands_attack_types", True)
    raw = getattr(backend, "raw_output", False)
    parameters = getattr(backend, "parameters", None)
    layout = resolve_layout(settings.prompt_layout, parameters() if callable(parameters) and not raw else None)
    requests = build_requests(facts, strategies, settings, expands_attack_types=expands, render=not raw, layout=layout)
    by_key: dict[tuple[str, str | None], Strategy] = {
        (s.name, s.attack_type if expands else None): s for s in strategies
    }
    started = time.perf_counter()
    if lock is not None and not getattr(backend, "thread_safe", False):
        with lock:
            generations = backend.generate(requests)
    else:
        generations = backend.generate(requests)
    if len(generations) != len(requests):
        raise RuntimeError(
            f"backend {backend.name} returned {len(generations)} generations for {len(requests)} requests"
        )
    candidates, rejections, outputs = rows_from_generations(
        generations,
        by_key,
        generator=backend.name,
        model=backend.model_name,
        raw_output=raw,
        run_id=run_id,
        batch_id=batch_id,
    )
    seconds = time.perf_counter() - started
    return {
        "candidates": candidates,
        "rejections": rejections,
        "stats": {
            "requests": len(requests),
            "outputs": outputs,
            "candidates": len(candidates),
            "rejected": len(rejections),
            "seconds": seconds,
            "by_kind": dict(Counter(c["kind"] for c in candidates)),
        },
    }


def generate_batch(
    facts: Sequence[Mapping[str, Any]],
    spec: Mapping[str, Any],
    settings: GenerateConfig | Mapping[str, Any],
    *,
    run_id: str | None = None,
    batch_id: str | None = None,
) -> dict[str, Any]:
    """Everything one batch makes: the configured backend's candidates, plus the dataset's own
    probes as candidates when ``settings.include_dataset``. Called in a task worker."""
    settings = as_config(settings)
    backend, lock = cached_backend(spec)
    out = run_backend(facts, backend, settings, run_id=run_id, batch_id=batch_id, lock=lock)
    if settings.include_dataset and spec["name"] != "dataset":
        extra = run_backend(facts, DatasetGenerator(), settings, run_id=run_id, batch_id=batch_id)
        out["candidates"].extend(extra["candidates"])
        out["rejections"].extend(extra["rejections"])
        for key in ("requests", "outputs", "candidates", "rejected", "seconds"):
            out["stats"][key] += extra["stats"][key]
        for kind, count in extra["stats"]["by_kind"].items():
            out["stats"]["by_kind"][kind] = out["stats"]["by_kind"].get(kind, 0) + count
    out["stats"]["generator"] = backend.name
    out["stats"]["model"] = backend.model_name
    return out


# -- batches -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    index: int
    batch_id: str
    facts: list[dict[str, Any]]

    @property
    def fact_ids(self) -> list[str]:
        return [f["fact_id"] for f in self.facts]


def prompt_versions(settings: GenerateConfig, backend_name: str) -> dict[str, str | None]:
    """The prompt (or rules template) version of every strategy the settings use, under the layout
    the configured model gets (``auto`` resolved by its size, as :func:`run_backend` does)."""
    local = backend_name in ("transformers", "vllm")
    layout = resolve_layout(settings.prompt_layout, model_parameters(settings.model) if local else None)
    out: dict[str, str | None] = {}
    for s in strategies_for(settings.kinds, settings.attack_types):
        key = f"{s.name}:{s.attack_type}" if s.attack_type else s.name
        out[key] = (
            rules_version(s.name, s.attack_type)
            if backend_name == "rules"
            else (None if backend_name == "dataset" else s.prompt_version_for(layout))
        )
    return out


def generation_identity(spec: Mapping[str, Any], settings: GenerateConfig) -> str:
    """Hash of everything besides the facts that shapes a batch's output."""
    return content_id(
        "generation",
        spec["identity"],
        settings.model_dump(include=set(OUTPUT_SETTINGS)),
        prompt_versions(settings, spec["name"]),
    )


def plan_batches(
    facts: Sequence[Mapping[str, Any]], batch_size: int, spec: Mapping[str, Any], settings: GenerateConfig
) -> list[Batch]:
    """Facts (sorted by id) cut into batches of ``batch_size``, each with its content-hash id."""
    ordered = sorted(facts, key=lambda f: f["fact_id"])
    identity = generation_identity(spec, settings)
    batches = []
    for index, start in enumerate(range(0, len(ordered), batch_size)):
        chunk = [dict(f) for f in ordered[start : start + batch_size]]
        batch_id = content_id("generate-batch", [f["fact_id"] for f in chunk], identity)
        batches.append(Batch(index, batch_id, chunk))
    return batches


def needs_probes(backend_name: str, settings: GenerateConfig) -> bool:
    return backend_name == "dataset" or settings.include_dataset


def needs_bank(backend_name: str) -> bool:
    return backend_name == "rules"
