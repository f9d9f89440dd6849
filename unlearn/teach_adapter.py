"""Teaching into a LoRA adapter, and what LLMEraser needs to know about it.

With ``teach.adapter.enabled`` the taught (and retain) model is the frozen base plus a LoRA adapter
(and, for the tiny model, its output head trained in full: ``modules_to_save``). The taught folder
holds the base with the adapter merged in (every other method and the evaluation load it as any
model) and, in ``adapter/``, the PEFT adapter itself with its training set D: the fact ids in the
manifest (key ``teach_adapter``) and the facts in ``adapter/training_facts.jsonl`` (the Hessian and
the gradients of the influence estimate need their text, not only their ids).

:func:`retrain_adapter` is the gold reference of an edit: the same adapter retrained from scratch on
the edited D (facts removed, answers corrected, questions changed), same seed and settings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lune.data.errors import LuneError
from lune.unlearn.lora import lora_config
from lune.unlearn.manifest import read_manifest

if TYPE_CHECKING:
    from lune.unlearn.config import TeachAdapter, TeachConfig

ADAPTER_DIR = "adapter"
FACTS_FILE = "training_facts.jsonl"
RECORD_KEY = "teach_adapter"  # the manifest key of the record


def attach_teach_adapter(model: Any, settings: TeachAdapter) -> Any:
    """Wrap ``model`` in a trainable PEFT LoRA model (the caller seeds torch: A's initialisation)."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, settings, modules_to_save=settings.modules_to_save))


def save_taught_adapter(
    model: Any, tokenizer: Any, folder: Path, base: str | Path, facts: Sequence[Mapping[str, Any]]
) -> tuple[Any, dict[str, Any]]:
    """Write the adapter and its training set to ``folder/adapter`` and the merged model to ``folder``.

    Returns the merged model (the PEFT wrapper is unloaded) and the manifest record."""
    adapter_dir = folder / ADAPTER_DIR
    model.save_pretrained(str(adapter_dir), safe_serialization=True)
    rows = [{k: f[k] for k in ("fact_id", "question", "answer", "key_span", "split") if k in f} for f in facts]
    (adapter_dir / FACTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    merged = model.merge_and_unload()
    merged.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    record = {
        "adapter_dir": ADAPTER_DIR,
        "base_model": str(base),
        "facts_file": f"{ADAPTER_DIR}/{FACTS_FILE}",
        "training_fact_ids": [r["fact_id"] for r in rows],
    }
    return merged, record


def adapter_record(model_dir: str | Path) -> dict[str, Any]:
    """The teach-adapter record of ``model_dir`` (a taught folder), or a LuneError naming it."""
    folder = Path(model_dir)
    record = read_manifest(folder).get(RECORD_KEY) if folder.is_dir() else None
    if not record or not (folder / record["adapter_dir"] / "adapter_config.json").exists():
        raise LuneError(
            f"--model {folder}: no LoRA adapter with a recorded training set (manifest key {RECORD_KEY!r} and "
            f"{ADAPTER_DIR}/adapter_config.json); LLMEraser corrects an adapter taught with "
            "`teach.adapter.enabled: true` (configs/lora-taught.yaml)"
        )
    return record


def training_facts(model_dir: str | Path) -> list[dict[str, Any]]:
    """The adapter's training set D (fact_id, question, answer, key_span, split), in teaching order."""
    folder = Path(model_dir)
    path = folder / adapter_record(folder)["facts_file"]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_teach_adapter(model_dir: str | Path, *, dtype: Any = None, device: str = "cpu") -> tuple[Any, Any]:
    """(PEFT model, tokenizer): the base with the taught adapter attached, adapter weights trainable,
    eager attention (double backward through fused SDPA attention is not implemented on CPU)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(model_dir)
    record = adapter_record(folder)
    base = AutoModelForCausalLM.from_pretrained(
        record["base_model"], dtype=dtype or torch.float32, attn_implementation="eager"
    ).to(device)
    model = PeftModel.from_pretrained(base, str(folder / record["adapter_dir"]), is_trainable=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return model, tokenizer


def edited_facts(
    facts: Sequence[Mapping[str, Any]],
    removed: Sequence[str] = (),
    replaced: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """D after an edit: facts whose id is in ``removed`` dropped, ``replaced[fact_id]`` laid over a fact
    (a new ``answer``: response correction; a new ``question``: query modification)."""
    gone = set(removed)
    replaced = replaced or {}
    return [{**f, **replaced.get(f["fact_id"], {})} for f in facts if f["fact_id"] not in gone]


def retrain_adapter(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    removed: Sequence[str] = (),
    replaced: Mapping[str, Mapping[str, Any]] | None = None,
    config: TeachConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The gold reference: the adapter of ``model_dir`` retrained from scratch on its training set with
    ``removed`` facts dropped and ``replaced`` ones changed, with the teach settings recorded in its
    manifest (same seed). Writes a taught folder (merged model + ``adapter/``) to ``out_dir``; returns
    the teach metrics."""
    from lune.unlearn.config import TeachConfig
    from lune.unlearn.teach import train_on_facts

    folder = Path(model_dir)
    record = adapter_record(folder)
    settings = config or TeachConfig.model_validate(read_manifest(folder)["config"])
    facts = edited_facts(training_facts(folder), removed, replaced)
    if not facts:
        raise LuneError(f"{folder}: removing {len(removed)} fact(s) leaves no training set to retrain on")
    return train_on_facts(record["base_model"], facts, out_dir, settings, label="retrained", progress=progress)
