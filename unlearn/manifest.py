"""``manifest.json``: what an adapter (or a model) written by lune is, and where it came from.

Written next to the weights by ``lune unlearn`` and ``lune teach``; read back by evaluation
(``evaluation.models.read_manifest``: the key ``method``) and by users. Keys written by unlearn:
``kind``, ``method``, ``set_id``, ``fact_ids``, ``train_candidate_ids``, ``base_model`` (the folder
loaded), ``base_model_ref`` (as given: a folder, a GGUF file or a known name), ``base_model_hash``,
``config`` (resolved), ``metrics`` (the kept check, the stop reason, the history of checks,
resources), ``trainable_params``, ``total_params``, ``anchor_fact_ids``, ``monitor_fact_ids``,
``run_id``, ``created_at``, ``versions``. A model taught into a LoRA adapter (``teach.adapter``), and
LLMEraser's output, add ``teach_adapter``: the adapter folder, its base model, and its training set
by fact id (``training_fact_ids``; the facts themselves in ``adapter/training_facts.jsonl``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
# Weight files up to this size are hashed whole; larger ones by size plus their first and last
# CHUNK bytes (a 7B checkpoint would otherwise take a minute to hash at every run).
FULL_HASH_LIMIT = 1 << 30
CHUNK = 8 << 20


def model_fingerprint(path: str | Path) -> str:
    """Content hash of a model directory: ``config.json`` and its weight files (see FULL_HASH_LIMIT)."""
    folder = Path(path)
    digest = hashlib.sha256()
    config = folder / "config.json"
    if config.exists():
        digest.update(config.read_bytes())
    weights = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    total = sum(p.stat().st_size for p in weights)
    for weight in weights:
        size = weight.stat().st_size
        digest.update(f"{weight.name}:{size}".encode())
        with weight.open("rb") as handle:
            if total <= FULL_HASH_LIMIT:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            else:
                digest.update(handle.read(CHUNK))
                handle.seek(max(size - CHUNK, 0))
                digest.update(handle.read(CHUNK))
    return digest.hexdigest()[:20]


def library_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def write_manifest(folder: str | Path, fields: dict[str, Any]) -> Path:
    """Write ``fields`` (plus ``created_at`` and library versions) as ``folder/manifest.json``."""
    out = Path(folder) / MANIFEST
    payload = {"created_at": datetime.now(UTC).isoformat(timespec="seconds"), "versions": library_versions(), **fields}
    out.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return out


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of ``folder`` ({} when it has none)."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
