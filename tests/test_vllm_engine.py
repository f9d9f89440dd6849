"""The vLLM engine's arguments (``core/vllm_engine.py``), shared by the generation backend and the
evaluation: the CPU quirks and the LoRA rank, without vLLM (the engine itself runs in
tests/test_vllm_backend.py and tests/test_evaluate_vllm.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lune.core.vllm_engine import adapter_rank, engine_options, model_max_len


def folder(path: Path, name: str, config: dict) -> str:
    path.mkdir()
    (path / name).write_text(json.dumps(config), encoding="utf-8")
    return str(path)


def test_cpu_engine_keeps_prompts_whole_and_computes_in_float32(tmp_path: Path) -> None:
    model = folder(tmp_path / "model", "config.json", {"max_position_embeddings": 16384})
    options = engine_options(model, on_cpu=True)
    assert options["dtype"] == "float32"
    assert options["enable_chunked_prefill"] is False and options["max_num_batched_tokens"] == 16384
    assert options["structured_outputs_config"] == {"backend": "xgrammar", "disable_any_whitespace": True}
    assert "enable_lora" not in options and "gpu_memory_utilization" not in options
    assert model_max_len(model) == 16384
    assert engine_options(model, on_cpu=True, max_model_len=2048)["max_num_batched_tokens"] == 8192  # the floor
    gpu = engine_options(model, on_cpu=False)
    assert gpu["dtype"] == "auto" and gpu["gpu_memory_utilization"] == 0.85 and "enable_chunked_prefill" not in gpu
    assert "kv_cache_memory_bytes" not in gpu


def test_cpu_kv_cache_is_bounded_unless_the_user_sizes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Left to vLLM, a CPU engine's KV cache took 19.6 of 23.5 GiB and was not given back."""
    model = folder(tmp_path / "model", "config.json", {"max_position_embeddings": 2048})
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    assert engine_options(model, on_cpu=True)["kv_cache_memory_bytes"] == 1 << 30
    assert (
        engine_options(model, on_cpu=True, engine_kwargs={"kv_cache_memory_bytes": 2 << 30})["kv_cache_memory_bytes"]
        == 2 << 30
    )
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")  # vLLM's own variable: it sizes the cache itself
    assert "kv_cache_memory_bytes" not in engine_options(model, on_cpu=True)


def test_lora_rank_is_the_largest_adapter_rank_rounded_up(tmp_path: Path) -> None:
    small = folder(tmp_path / "small", "adapter_config.json", {"r": 4})
    large = folder(tmp_path / "large", "adapter_config.json", {"r": 24})
    unnamed = folder(tmp_path / "unnamed", "adapter_config.json", {})
    assert adapter_rank(large) == 24 and adapter_rank(unnamed) is None and adapter_rank(str(tmp_path)) is None
    options = engine_options("m", on_cpu=True, enable_lora=True, adapters=[small, large], max_loras=2)
    assert (options["enable_lora"], options["max_loras"], options["max_lora_rank"]) == (True, 2, 32)
    assert engine_options("m", on_cpu=True, enable_lora=True, adapters=[small])["max_lora_rank"] == 8
    assert engine_options("m", on_cpu=True, enable_lora=True, adapters=[unnamed])["max_lora_rank"] == 16
    assert engine_options("m", on_cpu=True, enable_lora=True, max_lora_rank=600)["max_lora_rank"] == 512
    assert engine_options("m", on_cpu=True, engine_kwargs={"dtype": "bfloat16"})["dtype"] == "bfloat16"
