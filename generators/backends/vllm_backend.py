"""The ``vllm`` backend: the in-process ``vllm.LLM`` offline engine (built by
:func:`lune.core.vllm_engine.load_engine`, which evaluation uses too).

One batched ``generate`` (or ``chat``, for a model with a chat template) call per batch of requests,
each with its own ``SamplingParams`` (n, seed, temperature, top_p, max_tokens, stop) and, when asked,
JSON-schema structured output (vLLM 0.32: ``SamplingParams(structured_outputs=
StructuredOutputsParams(json=schema))``). Prefix caching is on: every prompt of a strategy shares
its instruction. An optional LoRA adapter is served as a ``LoRARequest`` (no merge).

vLLM is imported inside :meth:`VLLMGenerator.load`, so ``generators`` imports where it is absent.
The CPU facts (dtype, structured-output whitespace, chunked prefill) are in ``core/vllm_engine.py``;
one more is here: on CPU the engine runs eager (``enforce_eager``: compiling SmolLM2-135M took
170-400 s of engine start on a busy 2-core machine, eager 4 s). ``request_seeds=False`` drops the
per-request seeds (the engine is seeded with ``seed`` either way): seeded requests are sampled one
by one, unseeded ones together.

    gen = VLLMGenerator("runs/default/model", enable_lora=True)
    base = gen.greedy(prompts, max_tokens=48, adapter=False)
    unlearned = gen.greedy(prompts, max_tokens=48, adapter="runs/default/adapters/lune")
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from lune.core.vllm_engine import VLLMEngine, load_engine
from lune.generators.base import Generation, GenerationRequest
from lune.generators.config import VLLMOptions
from lune.generators.strategies.layouts import model_parameters


def _on_cpu() -> bool:
    """Whether vLLM runs on CPU here (False when vLLM is absent: load_engine then says so)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_cpu())


class VLLMGenerator:
    """``vllm.LLM`` on ``model`` (a local folder, a GGUF file or a known name: ``core.model_refs``).
    See the module docstring.

    ``adapter``: a PEFT LoRA folder applied to every request by default (``greedy`` may pick another
    one, or ``False`` for the base, per call). ``enable_lora``: allow adapters (default: when
    ``adapter`` is given). ``max_lora_rank``: default the adapter's rank rounded up to one vLLM accepts.
    ``enforce_eager``: skip torch.compile (None: on CPU). ``request_seeds``: send each request's seed
    (default; the engine is seeded with ``seed`` either way).
    ``engine_kwargs``: more ``vllm.LLM`` arguments, passed as is.
    """

    name = "vllm"
    raw_output = False
    expands_attack_types = True
    thread_safe = False
    options_model: ClassVar[type[VLLMOptions]] = VLLMOptions  # its keyword options, by field name
    shared_settings: ClassVar[tuple[str, ...]] = ("model", "adapter", "seed", "use_chat_template")

    @staticmethod
    def identity(options: Mapping[str, Any]) -> dict[str, Any]:
        """The options that enter batch ids (not GPUs, memory or engine arguments, as before)."""
        return {
            "model": options["model"],
            "adapter": options["adapter"],
            "dtype": options["dtype"],
            "chat": options["use_chat_template"],
        }

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        *,
        enable_lora: bool | None = None,
        max_lora_rank: int | None = None,
        max_loras: int = 2,
        tensor_parallel_size: int = 1,
        dtype: str | None = None,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.85,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        use_chat_template: bool | None = None,
        structured_outputs_backend: str = "xgrammar",
        enforce_eager: bool | None = None,
        request_seeds: bool = True,
        engine_kwargs: dict[str, Any] | None = None,
    ):
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
        self.enforce_eager = enforce_eager
        self.request_seeds = request_seeds
        self.engine_kwargs = dict(engine_kwargs or {})
        self.engine: VLLMEngine | None = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.model_path if not self.adapter else f"{self.model_path}+{self.adapter}"

    def parameters(self) -> int | None:
        """The model's parameter count (None: unknown), for the ``auto`` prompt layout."""
        return model_parameters(self.model_path)

    def load(self) -> None:
        if self.engine is not None:
            return
        on_cpu = _on_cpu()
        engine_kwargs = dict(self.engine_kwargs)
        if self.enforce_eager or (self.enforce_eager is None and on_cpu):
            # On CPU vLLM compiles the model with inductor at start (about 3 minutes for SmolLM2-135M on
            # a busy 2-core machine, 4 s eager); a generation run rarely decodes long enough to repay it.
            engine_kwargs.setdefault("enforce_eager", True)
        self.engine = load_engine(
            self.model_path,
            enable_lora=self.enable_lora,
            adapters=[self.adapter] if self.adapter else [],
            max_lora_rank=self.max_lora_rank,
            max_loras=self.max_loras,
            tensor_parallel_size=self.tensor_parallel_size,
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            gpu_memory_utilization=self.gpu_memory_utilization,
            enable_prefix_caching=self.enable_prefix_caching,
            seed=self.seed,
            structured_outputs_backend=self.structured_outputs_backend,
            engine_kwargs=engine_kwargs,
        )

    # -- helpers ---------------------------------------------------------------------------------

    def _adapter_path(self, adapter: str | bool | None) -> str | None:
        """None = the generator's own adapter (if any); False = the base model; a path = that adapter."""
        return self.adapter if adapter is None else (None if adapter is False else str(adapter))

    def _sampling_params(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=request.json_schema) if request.json_schema else None
        return SamplingParams(
            n=request.n,
            seed=request.seed if self.request_seeds else None,
            temperature=request.temperature,
            top_p=request.top_p if request.temperature > 0 else 1.0,
            max_tokens=request.max_tokens,
            stop=list(request.stop) or None,
            structured_outputs=structured,
        )

    def _use_chat(self, request: GenerationRequest) -> bool:
        if not request.messages or self.use_chat_template is False:
            return False
        return bool(getattr(self.engine.tokenizer, "chat_template", None))

    # -- protocol --------------------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest], *, adapter: str | bool | None = None) -> list[Generation]:
        """One engine call for the plain-prompt requests and one for the chat ones, order kept."""
        self.load()
        lora = self.engine.lora_request(self._adapter_path(adapter))
        texts: list[list[str] | None] = [None] * len(requests)
        chat = [i for i, r in enumerate(requests) if self._use_chat(r)]
        chat_set = set(chat)
        plain = [i for i in range(len(requests)) if i not in chat_set]
        with self._lock:
            if plain:
                outputs = self.engine.llm.generate(
                    [requests[i].prompt for i in plain],
                    [self._sampling_params(requests[i]) for i in plain],
                    use_tqdm=False,
                    lora_request=lora,
                )
                for i, output in zip(plain, outputs):
                    texts[i] = [c.text for c in output.outputs]
            if chat:
                outputs = self.engine.llm.chat(
                    [requests[i].messages for i in chat],
                    [self._sampling_params(requests[i]) for i in chat],
                    use_tqdm=False,
                    lora_request=lora,
                )
                for i, output in zip(chat, outputs):
                    texts[i] = [c.text for c in output.outputs]
        return [Generation(r, t or []) for r, t in zip(requests, texts)]

    def greedy(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int = 48,
        stop: Sequence[str] = (),
        adapter: str | bool | None = None,
    ) -> list[str]:
        """Greedy continuations of ``prompts``, stripped (as :func:`lune.core.greedy.greedy_complete`).

        ``adapter``: None = the generator's own adapter (if any); False = the base model; a path = that
        LoRA adapter (needs ``enable_lora=True``). All prompts go to the engine in one call.
        """
        self.load()
        with self._lock:
            return self.engine.greedy(prompts, max_tokens=max_tokens, stop=stop, adapter=self._adapter_path(adapter))

    def greedy_answers(
        self, questions: Sequence[str], *, max_tokens: int = 48, adapter: str | bool | None = None
    ) -> list[str]:
        """Greedy answers to ``questions`` laid out by :func:`lune.core.prompt_format.render_prompt` (the
        layout the model was taught with), as :func:`lune.core.greedy.greedy_answers`."""
        from lune.core.prompt_format import render_prompt

        self.load()
        tokenizer = self.engine.tokenizer
        prompts = [render_prompt(tokenizer, q, use_chat_template=self.use_chat_template) for q in questions]
        return self.greedy(prompts, max_tokens=max_tokens, adapter=adapter)
