"""Which models an evaluation compares, and loading them for transformers.

A model to evaluate is a :class:`ModelSpec`: the base model directory plus, optionally, a PEFT
adapter directory (LUNE and other LoRA methods), an intervention artefact (GRUN: hooks on the base
model, ``core/interventions.py``; transformers only, vLLM cannot serve them) or a full model
directory of its own (methods that rewrite every weight). ``base`` is always evaluated first, on the
same probes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lune.core.interventions import is_intervention_dir
from lune.core.model_refs import resolve_model
from lune.data.errors import LuneError

BASE_LABEL = "base"
RETAIN_LABEL = "retain_model"


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate: ``model_path`` (+ ``adapter_path`` when a PEFT adapter, or
    ``interventions_path`` when GRUN's interventions)."""

    label: str
    model_path: str
    adapter_path: str | None = None
    method: str | None = None
    interventions_path: str | None = None

    @property
    def is_adapter(self) -> bool:
        return self.adapter_path is not None

    @property
    def needs_transformers(self) -> bool:
        """Interventions are forward hooks: no vLLM LoRA request can carry them."""
        return self.interventions_path is not None


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """``manifest.json`` written next to an adapter or model by ``lune unlearn`` ({} if absent)."""
    manifest = Path(path) / "manifest.json"
    if not manifest.exists():
        return {}
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LuneError(f"{manifest}: not valid JSON ({err.msg} at line {err.lineno})") from None
    return data if isinstance(data, dict) else {}


def _check_model_dir(path: str | Path, what: str) -> None:
    p = Path(path)
    if not p.is_dir():
        raise LuneError(f"{what} {p}: no such directory")
    if not (p / "config.json").exists() and not is_adapter_dir(p) and not is_intervention_dir(p):
        raise LuneError(
            f"{what} {p}: neither a model (config.json), a PEFT adapter (adapter_config.json) nor "
            "interventions (interventions.json); "
            "pass a directory written by `lune teach` or `lune unlearn`"
        )


def model_specs(base_model: str | Path, adapters: Mapping[str, str | Path | None]) -> list[ModelSpec]:
    """``base`` then one spec per ``label -> path`` (a PEFT adapter directory, or a full model
    directory). The method is read from the directory's ``manifest.json`` (key ``method``), else
    the label. ``base_model`` may be a GGUF file or a known name too (``core.model_refs``): its
    converted folder is what the specs name."""
    base_model = resolve_model(base_model, "--model")
    _check_model_dir(base_model, "--model")
    specs = [ModelSpec(BASE_LABEL, str(base_model), method=None)]
    for label, path in adapters.items():
        if label in (BASE_LABEL, RETAIN_LABEL):
            raise LuneError(f"label {label!r} is reserved; name the unlearned model otherwise (e.g. `--label lune`)")
        if path is None:
            continue
        _check_model_dir(path, f"adapter {label!r}:")
        method = read_manifest(path).get("method") or label
        if is_adapter_dir(path):
            specs.append(ModelSpec(label, str(base_model), str(path), method))
        elif is_intervention_dir(path):
            specs.append(ModelSpec(label, str(base_model), None, method, interventions_path=str(path)))
        else:
            specs.append(ModelSpec(label, str(path), None, method))
    return specs


def set_attention(model: Any, implementation: str | None) -> None:
    """Switch ``model``'s attention implementation (``eager``, ``sdpa``, ...) where it can be switched;
    a model that cannot (remote code) keeps its own."""
    if implementation is None:
        return
    import contextlib

    with contextlib.suppress(AttributeError, ValueError, ImportError):
        model.set_attn_implementation(implementation)


def attention_of(model: Any) -> str | None:
    """The attention implementation ``model`` runs now (None where it does not say)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def load_causal_lm(path: str | Path) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a directory, in eval mode (GPU when there is one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_flush_denormal(True)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device)
    model.eval()
    return model, tokenizer


def iter_loaded(specs: Sequence[ModelSpec]) -> Iterator[tuple[ModelSpec, Any, Any]]:
    """Yield ``(spec, model, tokenizer)`` for each spec in turn, loading each base model once and
    attaching adapters to it one at a time (PEFT ``unload`` takes an adapter off again, unmerged;
    interventions are hooks, removed after use). Consume each model before asking for the next."""
    current_path: str | None = None
    model = tokenizer = None
    for spec in specs:
        if spec.model_path != current_path:
            model = tokenizer = None  # one base model in memory at a time
            model, tokenizer = load_causal_lm(spec.model_path)
            current_path = spec.model_path
        if spec.interventions_path is not None:
            from lune.core.interventions import attach

            handle = attach(model, spec.interventions_path, tokenizer=tokenizer)
            try:
                yield spec, model, tokenizer
            finally:
                handle.remove()
            continue
        if spec.adapter_path is None:
            yield spec, model, tokenizer
            continue
        from peft import PeftModel

        wrapped = PeftModel.from_pretrained(model, spec.adapter_path)
        wrapped.eval()
        try:
            yield spec, wrapped, tokenizer
        finally:
            model = wrapped.unload()
