"""Model references (core/model_refs.py): a folder, a GGUF file or a known name -> a folder transformers loads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from lune.core.model_refs import (
    KNOWN_MODELS,
    MANIFEST,
    convert_gguf,
    gguf_architecture,
    locate_model,
    resolve_model,
)
from lune.data.errors import LuneError

SMOLLM2 = "smollm2-135m-instruct"


def write_gguf(path: Path, architecture: str) -> Path:
    """A small, complete GGUF file of ``architecture`` with one tensor (gguf's own writer)."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def cache_entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_a_folder_and_a_hub_id_resolve_to_themselves(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(tmp_path) == tmp_path
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == Path("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_missing_or_wrong_references_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LuneError, match=r"--model .*missing\.gguf: GGUF file not found"):
        resolve_model(tmp_path / "missing.gguf", "--model")
    with pytest.raises(LuneError, match=rf"nope: not found .*not a known model name: {SMOLLM2}"):
        resolve_model(tmp_path / "nope")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(LuneError, match="not a GGUF file"):
        resolve_model(text)


def test_a_known_name_is_the_file_of_its_package() -> None:
    path = locate_model(SMOLLM2)
    assert path.name == KNOWN_MODELS[SMOLLM2].file and path.is_file()
    assert gguf_architecture(path) == KNOWN_MODELS[SMOLLM2].architecture


@pytest.mark.parametrize("keep", [4096, 1_786_664], ids=["header-cut", "tensors-cut"])
def test_a_truncated_gguf_is_named_and_leaves_no_cache_folder(tmp_path: Path, keep: int) -> None:
    cut = tmp_path / "cut.gguf"
    with locate_model(SMOLLM2).open("rb") as handle:
        cut.write_bytes(handle.read(keep))
    cache = tmp_path / "cache"
    with pytest.raises(LuneError, match=r"cut\.gguf: not a complete GGUF file .*download or copy it again"):
        resolve_model(cut, cache=cache)
    assert cache_entries(cache) == []


def test_another_architecture_than_the_known_one_is_refused(tmp_path: Path) -> None:
    other = write_gguf(tmp_path / "other.gguf", "rwkv7")
    cache = tmp_path / "cache"
    with pytest.raises(LuneError, match=r"other\.gguf: architecture 'rwkv7', expected 'llama'"):
        convert_gguf(other, cache, architecture="llama")
    assert cache_entries(cache) == []


def test_an_architecture_transformers_cannot_load_is_named_and_leaves_nothing(tmp_path: Path) -> None:
    other = write_gguf(tmp_path / "other.gguf", "rwkv7")
    cache = tmp_path / "cache"
    with pytest.raises(LuneError, match=r"other\.gguf: transformers .* cannot load it \(architecture 'rwkv7'"):
        resolve_model(other, cache=cache)
    assert cache_entries(cache) == []  # the partial folder is gone too


@pytest.mark.slow
def test_smollm2_converts_once_loads_answers_and_takes_a_lora_adapter(lune_cache: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rng = torch.random.get_rng_state()
    started = time.perf_counter()
    folder = resolve_model(SMOLLM2)
    converted_s = time.perf_counter() - started
    assert torch.equal(torch.random.get_rng_state(), rng)  # conversion leaves the caller's random stream alone
    assert folder.parent == lune_cache / "models"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["source"] == str(locate_model(SMOLLM2).resolve())
    assert folder.name == manifest["sha256"] and manifest["architecture"] == "llama"
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no partial folder left

    started = time.perf_counter()
    assert resolve_model(SMOLLM2) == folder
    cached_s = time.perf_counter() - started
    assert cached_s < 5, cached_s  # a hash of the 93 MB file, no conversion

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert tokenizer.chat_template  # the GGUF's chat template came along
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1] :])

    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert 0 < trainable < 1_000_000
    print(f"conversion {converted_s:.1f} s, cache hit {cached_s:.2f} s")
