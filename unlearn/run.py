"""One unlearning run, end to end: load the model, train the method, save the adapter (or the
model), write the manifest, record the run.

    >>> from lune.unlearn.run import unlearn
    >>> result = unlearn("runs/default/models/teach-.../taught", "runs/exports/tofu-forget01",
    ...                  "runs/default/adapters/lune", UnlearnConfig(retain_anchor="kl"), retain=retain_facts)
    >>> result.adapter_dir, result.manifest_path

Output folder: LoRA methods write a PEFT adapter (``adapter_config.json``,
``adapter_model.safetensors``) and ``manifest.json``; ``merge`` adds ``merged/`` (the base model with
the adapter folded in, loadable without PEFT). ``full_ft`` writes a whole model (weights and
tokenizer) and ``manifest.json``. ``grun`` writes its interventions (``interventions.json``,
``interventions.safetensors``: ``core/interventions.py``) and ``manifest.json``. The folder is
written beside its final place and moved there at the end, so a crash never leaves a half-written
adapter that looks finished.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lune.core.model_refs import resolve_model
from lune.data.errors import LuneError
from lune.unlearn.config import UnlearnConfig
from lune.unlearn.inputs import UnlearnData, build_data
from lune.unlearn.manifest import model_fingerprint, write_manifest
from lune.unlearn.methods import METHODS
from lune.unlearn.trainer import TrainOutcome


@dataclass
class UnlearnResult:
    """Where the run wrote its output, and what it measured."""

    out_dir: Path
    method: str
    manifest_path: Path
    merged_dir: Path | None
    metrics: dict[str, Any]
    run_id: str | None = None
    is_adapter: bool = True
    outcome: TrainOutcome | None = field(default=None, repr=False)

    @property
    def adapter_dir(self) -> Path | None:
        """The PEFT adapter folder (None for full_ft, which writes a whole model)."""
        return self.out_dir if self.is_adapter else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None,
            "manifest": str(self.manifest_path),
            "merged_dir": str(self.merged_dir) if self.merged_dir else None,
            "method": self.method,
            "run_id": self.run_id,
            "metrics": self.metrics,
        }


def resolve_device(config: UnlearnConfig) -> tuple[str, Any]:
    """(device, dtype): the config's, else cuda + bfloat16 when there is a GPU, cpu + float32 otherwise."""
    import torch

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if config.dtype:
        dtype = getattr(torch, config.dtype)
    else:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return device, dtype


def load_model(path: str | Path, config: UnlearnConfig) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a local directory (or a hub id when online)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, dtype = resolve_device(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=config.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as err:
        raise LuneError(
            f"--model {path}: cannot load a causal LM ({str(err).splitlines()[0]}); pass a directory "
            "with config.json and weights, e.g. one written by `lune teach`"
            + ("" if config.trust_remote_code else ", or --trust-remote-code if it ships its own code")
        ) from None
    return model.to(device), tokenizer


def unlearn(
    model: str | Path,
    data: UnlearnData | str | Path | Mapping[str, Sequence[Mapping[str, Any]]],
    out_dir: str | Path,
    config: UnlearnConfig | None = None,
    *,
    retain: Sequence[Mapping[str, Any]] = (),
    set_id: str | None = None,
    store: Any = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    progress: bool = True,
) -> UnlearnResult:
    """Unlearn a curated set from ``model`` with ``config.method``; write the result to ``out_dir``.

    ``model``: a folder, a GGUF file or a known name (``core.model_refs``; the run and the manifest
    record the reference and the folder it resolved to);
    ``data``: an :class:`UnlearnData`, a ``lune export`` folder, or the rows of ``curated_rows``;
    ``retain``: retain facts (question, answer, key_span[, fact_id]) for the anchor and GUR (an
    ``UnlearnData`` carries its own, and ``retain`` is not used then);
    ``store``: an open ``data.store.Store`` to record the run in (kind ``unlearn``).
    """
    config = (config or UnlearnConfig()).for_method()  # the method's own settings (per_method) apply
    if not isinstance(data, UnlearnData):
        data = build_data(data, retain, set_id=set_id)
    folder = resolve_model(model, "--model")
    if store is None:
        return _unlearn(folder, str(model), data, Path(out_dir), config, None, progress)
    with store.run(
        "unlearn",
        {
            "unlearn": config.model_dump(mode="json"),
            "model": str(model),
            "model_folder": str(folder),
            "set_id": data.set_id,
            "data": data.source,
            "out_dir": str(out_dir),
        },
        run_id=run_id,
        parent_run_id=parent_run_id,
    ) as run:
        result = _unlearn(folder, str(model), data, Path(out_dir), config, run.run_id, progress)
        run.metrics.update(result.metrics)
        run.artefacts.update({"out_dir": str(result.out_dir), "manifest": str(result.manifest_path)})
        if result.adapter_dir:
            run.artefacts["adapter"] = str(result.adapter_dir)
        if result.merged_dir:
            run.artefacts["merged"] = str(result.merged_dir)
    return result


def _unlearn(
    model_path: Path,
    model_ref: str,
    data: UnlearnData,
    out: Path,
    config: UnlearnConfig,
    run_id: str | None,
    progress: bool,
) -> UnlearnResult:
    started = time.perf_counter()
    base_hash = model_fingerprint(model_path) if model_path.is_dir() else None
    method = METHODS[config.method]
    model, tokenizer = method.load(model_path, config)
    trainer = method(model, tokenizer, data, config, progress=progress)
    trainer.model_path = model_path
    outcome = trainer.train()

    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    trained = trainer.model
    kind = trainer.save_output(partial, tokenizer)  # adapter, whole model, or GRUN's interventions
    merged = None
    if config.merge and trainer.uses_lora:
        merged = partial / "merged"
        trained.merge_and_unload().save_pretrained(str(merged), safe_serialization=True)
        tokenizer.save_pretrained(str(merged))
    metrics = outcome.metrics()
    manifest_fields = {
        "kind": kind,
        "method": config.method,
        "set_id": data.set_id,
        "data": data.source,
        "fact_ids": data.fact_ids,
        "train_candidate_ids": sorted({r["candidate_id"] for r in data.train if r.get("candidate_id")}),
        "base_model": str(model_path),
        "base_model_ref": model_ref,
        "base_model_hash": base_hash,
        "config": config.model_dump(mode="json"),
        "metrics": {
            "kept": outcome.kept,
            "stop_reason": outcome.stop_reason,
            "history": outcome.history,
            "time_to_target": outcome.time_to_target,
            "resources": outcome.resources,
        },
        "trainable_params": outcome.trainable_params,
        "total_params": outcome.total_params,
        "examples": outcome.examples,
        "anchor_fact_ids": outcome.anchor_facts,
        "monitor_fact_ids": outcome.monitor_facts,
        "run_id": run_id,
        **trainer.manifest_fields(),
    }
    write_manifest(partial, manifest_fields)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(out)
    metrics["run_wall_s"] = round(time.perf_counter() - started, 3)
    return UnlearnResult(
        out_dir=out,
        method=config.method,
        manifest_path=out / "manifest.json",
        merged_dir=(out / "merged") if merged else None,
        metrics=metrics,
        run_id=run_id,
        is_adapter=trainer.uses_lora,
        outcome=outcome,
    )
