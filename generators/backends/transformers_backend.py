"""The ``transformers`` backend: batched, left-padded ``generate`` on CPU or GPU, with an optional
LoRA adapter (PEFT).

Greedy requests (temperature 0) go through :func:`evaluation.greedy.greedy_complete`, the same
decoding that early stopping and evaluation use, so a greedy answer here is the answer they see.
Sampling keeps that layout (left padding, text after the prompt, special tokens removed) and adds
``n`` samples per prompt, temperature, top-p and a seed: each chunk of requests is sampled under
``torch.manual_seed`` of a hash of its requests' seeds, inside a forked RNG so the caller's global
RNG is untouched. Stop strings are applied by trimming the text at the first one.

For evaluation (greedy answers from a base model and its unlearned adapters, one load)::

    gen = TransformersGenerator("runs/default/model")
    base = gen.greedy(prompts, max_tokens=48, adapter=False)
    unlearned = gen.greedy(prompts, max_tokens=48, adapter="runs/default/adapters/lune")
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from lune.core.model_refs import resolve_model
from lune.data.errors import LuneError
from lune.data.ids import content_id
from lune.generators.base import Generation, GenerationRequest
from lune.generators.config import TransformersOptions
from lune.generators.strategies.layouts import model_parameters


def trim_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (the stop string excluded)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


class TransformersGenerator:
    """In-process Hugging Face causal LM (``model``: a local folder, a GGUF file or a known name, see
    ``core.model_refs``), optionally with a PEFT adapter.

    ``adapter``: a PEFT adapter folder applied by default; ``greedy(..., adapter=...)`` can pick
    another one (or ``False`` for the base model) per call, each loaded once.
    ``batch_size``: prompts per forward batch (a sampling chunk holds ``batch_size // n`` prompts).
    ``use_chat_template``: None = use the tokenizer's chat template for requests with messages when it
    has one; True / False force it. The keyword options besides those are the fields of
    :class:`~lune.generators.config.TransformersOptions`.
    """

    name = "transformers"
    raw_output = False
    expands_attack_types = True
    thread_safe = False
    options_model: ClassVar[type[TransformersOptions]] = TransformersOptions
    shared_settings: ClassVar[tuple[str, ...]] = ("model", "adapter", "use_chat_template")

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 16,
        use_chat_template: bool | None = None,
        trust_remote_code: bool = False,
    ):
        self.model_path = str(model)
        self.adapter = str(adapter) if adapter else None
        self.device = device
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))
        self.use_chat_template = use_chat_template
        self.trust_remote_code = trust_remote_code
        self.model: Any = None
        self.tokenizer: Any = None
        self._peft: Any = None
        self._adapters: dict[str, str] = {}  # adapter path -> PEFT adapter name
        self._lock = threading.Lock()

    @staticmethod
    def identity(options: Mapping[str, Any]) -> dict[str, Any]:
        """The options that enter batch ids (not the device or the batch size, as before)."""
        return {
            "model": options["model"],
            "adapter": options["adapter"],
            "dtype": options["dtype"],
            "chat": options["use_chat_template"],
        }

    @property
    def model_name(self) -> str:
        return self.model_path if not self.adapter else f"{self.model_path}+{self.adapter}"

    def parameters(self) -> int | None:
        """The model's parameter count (None: unknown), for the ``auto`` prompt layout."""
        return model_parameters(self.model_path)

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = resolve_model(self.model_path, "transformers backend: model")
        if not folder.exists():
            raise LuneError(
                f"transformers backend: model folder {self.model_path} not found "
                "(pass a local path: nothing is fetched from a hub)"
            )
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype: Any = self.dtype or ("auto" if device != "cpu" else "float32")
        if dtype != "auto":
            dtype = getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=self.trust_remote_code)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, trust_remote_code=self.trust_remote_code)
        self.model = model.to(device).eval()
        self.device = device
        if self.adapter:
            self._select(self.adapter)

    def _select(self, adapter: str | None) -> Any:
        """The model to run: the base (``None``) or the base with ``adapter`` active (loaded once)."""
        if adapter is None:
            return self.model
        from peft import PeftModel

        adapter = str(adapter)
        if not Path(adapter).exists():
            raise LuneError(f"transformers backend: adapter folder {adapter} not found")
        if adapter not in self._adapters:
            name = "a" + content_id("adapter", adapter)[:10]
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, adapter, adapter_name=name).eval()
            else:
                self._peft.load_adapter(adapter, adapter_name=name)
            self._adapters[adapter] = name
        self._peft.set_adapter(self._adapters[adapter])
        return self._peft

    def _resolve_adapter(self, adapter: str | bool | None) -> str | None:
        if adapter is None:
            return self.adapter
        if adapter is False:
            return None
        return str(adapter)

    # -- generation ------------------------------------------------------------------------------

    def _prompt_text(self, request: GenerationRequest) -> str:
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        use = self.use_chat_template if self.use_chat_template is not None else has_template
        if request.messages and use and has_template:
            return self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        return request.prompt

    def greedy(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int = 48,
        stop: Sequence[str] = (),
        adapter: str | bool | None = None,
    ) -> list[str]:
        """Greedy continuations of ``prompts`` (stripped, trimmed at ``stop``), batched.

        ``adapter``: None = the generator's own adapter (if any); False = the base model; a path =
        that PEFT adapter. Decoding is :func:`evaluation.greedy.greedy_complete`'s.
        """
        from lune.core.greedy import greedy_complete

        self.load()
        with self._lock, self._using(adapter) as model:
            texts = greedy_complete(
                model, self.tokenizer, list(prompts), max_new_tokens=max_tokens, batch_size=self.batch_size
            )
        return [trim_at_stop(t, stop).strip() for t in texts]

    def greedy_answers(
        self, questions: Sequence[str], *, max_tokens: int = 48, adapter: str | bool | None = None
    ) -> list[str]:
        """Greedy answers to ``questions`` laid out by :func:`data.prompt_format.render_prompt` (the
        layout the model was taught with), as :func:`evaluation.greedy.greedy_answers`."""
        from lune.core.prompt_format import render_prompt

        self.load()
        prompts = [render_prompt(self.tokenizer, q, use_chat_template=self.use_chat_template) for q in questions]
        return self.greedy(prompts, max_tokens=max_tokens, adapter=adapter)

    @contextmanager
    def _using(self, adapter: str | bool | None) -> Iterator[Any]:
        """The model to run with the right adapter active. Once PEFT has wrapped the base model, its
        layers carry LoRA modules, so the base model is the wrapper with its adapters disabled."""
        resolved = self._resolve_adapter(adapter)
        if resolved is not None:
            yield self._select(resolved)
        elif self._peft is not None:
            with self._peft.disable_adapter():
                yield self._peft
        else:
            yield self.model

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        self.load()
        results: list[Generation | None] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, r in enumerate(requests):
            key = (r.temperature <= 0, r.temperature, r.top_p, r.max_tokens, r.n, tuple(r.stop))
            groups.setdefault(key, []).append(i)
        for (greedy, temperature, top_p, max_tokens, n, stop), indices in groups.items():
            prompts = {i: self._prompt_text(requests[i]) for i in indices}
            if greedy:
                texts = self.greedy([prompts[i] for i in indices], max_tokens=max_tokens, stop=stop)
                for i, text in zip(indices, texts):
                    results[i] = Generation(requests[i], [text] * n)
                continue
            per_chunk = max(1, self.batch_size // n)
            for start in range(0, len(indices), per_chunk):
                chunk = indices[start : start + per_chunk]
                seeds = [requests[i].seed for i in chunk]
                samples = self._sample(
                    [prompts[i] for i in chunk],
                    n=n,
                    temperature=temperature,
                    top_p=top_p,
                    max_tokens=max_tokens,
                    seed=seeds,
                    stop=stop,
                )
                for j, i in enumerate(chunk):
                    texts = [trim_at_stop(t, stop).strip() for t in samples[j * n : (j + 1) * n]]
                    results[i] = Generation(requests[i], texts)
        return [r for r in results if r is not None]

    def _sample(
        self,
        prompts: list[str],
        *,
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: list[int | None],
        stop: Sequence[str] = (),
    ) -> list[str]:
        """``n`` samples per prompt, grouped by prompt, under a seed derived from the requests' seeds.
        A sample ends at a stop string (``generate(stop_strings=...)``): a few-shot line is a fraction
        of ``max_tokens``, and decoding past it would be thrown away."""
        import torch

        tok = self.tokenizer
        with self._lock, self._using(None) as model:
            previous_side = tok.padding_side
            tok.padding_side = "left"
            try:
                batch = tok(prompts, return_tensors="pt", padding=True).to(self.device)
                chunk_seed = int(content_id("sample-seed", seed)[:8], 16)
                devices = [torch.cuda.current_device()] if str(self.device).startswith("cuda") else []
                with torch.random.fork_rng(devices=devices), torch.no_grad():
                    torch.manual_seed(chunk_seed)
                    out = model.generate(
                        **batch,
                        do_sample=True,
                        temperature=temperature,
                        top_p=top_p,
                        num_return_sequences=n,
                        max_new_tokens=max_tokens,
                        pad_token_id=tok.pad_token_id,
                        eos_token_id=tok.eos_token_id,
                        **({"stop_strings": list(stop), "tokenizer": tok} if stop else {}),
                    )
            finally:
                tok.padding_side = previous_side
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        return tok.batch_decode(new_tokens, skip_special_tokens=True)
