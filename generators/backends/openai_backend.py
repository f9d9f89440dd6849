"""The ``openai`` backend: any OpenAI-compatible server (``vllm serve``, ...), one or many.

This is how generation scales past one machine: start ``vllm serve`` (or
``python -m vllm.entrypoints.openai.api_server``) on each GPU host and list their base URLs. Requests
are spread round-robin over the URLs, sent concurrently (``httpx`` async, at most ``concurrency`` in
flight), and retried with exponential backoff on 429, 5xx, time-outs and connection errors (a retry
goes to the next URL, so a dead host only slows things down). A request the server refuses as bad
(HTTP 400, e.g. a prompt longer than the context) becomes an error on that request (a ``rejections``
row), not a failed batch; an exhausted retry budget or an auth/not-found error fails the batch.

JSON schema: vLLM's server extension, ``"structured_outputs": {"json": schema}`` in the request body
(vLLM 0.32, ``vllm/entrypoints/openai/completion/protocol.py``; the older ``guided_json`` field is
gone), or the OpenAI-standard ``response_format`` with ``json_mode="response_format"``.

    gen = OpenAIGenerator(["http://gpu1:8000", "http://gpu2:8000"], concurrency=64)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import threading
from collections import Counter
from collections.abc import Coroutine, Sequence
from typing import Any, Literal

from lune.data.errors import LuneError
from lune.generators.base import Generation, GenerationRequest

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class GenerationError(LuneError):
    """The server could not be made to answer (retries exhausted, auth, unknown model)."""


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1/`` both become ``http://host:8000/v1``."""
    url = url.strip().rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from sync code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class OpenAIGenerator:
    """Client of one or more OpenAI-compatible servers (see the module docstring).

    ``base_urls``: one URL or a list. ``model``: the served model name (default: the first model the
    first server lists). ``api_key``: default ``$OPENAI_API_KEY``, else none. ``chat``: use
    ``/chat/completions`` with the requests' messages instead of ``/completions`` with their prompt.
    ``extra_body``: more fields for every request body (server-specific sampling options).
    """

    name = "openai"
    raw_output = False
    expands_attack_types = True
    thread_safe = True

    def __init__(self, base_urls: str | Sequence[str], model: str | None = None, *, api_key: str | None = None,
                 chat: bool = False, concurrency: int = 16, max_retries: int = 5, timeout_s: float = 120.0,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 json_mode: Literal["structured_outputs", "response_format", "none"] = "structured_outputs",
                 extra_body: dict[str, Any] | None = None):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise LuneError("openai backend: give at least one base URL (generate.openai.base_urls / --base-url)")
        self.base_urls = [normalize_base_url(u) for u in urls]
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.chat = chat
        self.concurrency = max(1, int(concurrency))
        self.max_retries = max(0, int(max_retries))
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.json_mode = json_mode
        self.extra_body = dict(extra_body or {})
        self.stats: Counter[str] = Counter()   # requests per URL, retries, errors (for logs and tests)
        self._counter = itertools.count()
        self._counter_lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.model or "unknown"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def load(self) -> None:
        """Ask the first server that answers which model it serves, when none was given."""
        if self.model:
            return
        import httpx

        problems = []
        for url in self.base_urls:
            try:
                response = httpx.get(f"{url}/models", headers=self._headers(), timeout=self.timeout_s)
                response.raise_for_status()
                self.model = response.json()["data"][0]["id"]
                return
            except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
                problems.append(f"{url}: {err}")
        raise GenerationError("openai backend: no server told its model name; give `model`. " + "; ".join(problems))

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "n": request.n,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        if self.chat:
            body["messages"] = request.messages or [{"role": "user", "content": request.prompt}]
        else:
            body["prompt"] = request.prompt
        if request.json_schema is not None and self.json_mode == "structured_outputs":
            body["structured_outputs"] = {"json": request.json_schema}
        elif request.json_schema is not None and self.json_mode == "response_format":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "candidate", "schema": request.json_schema}}
        body.update(self.extra_body)
        return body

    def _texts(self, payload: Any) -> list[str]:
        choices = sorted(payload["choices"], key=lambda c: c.get("index", 0))
        if self.chat:
            return [(c.get("message") or {}).get("content") or "" for c in choices]
        return [c.get("text") or "" for c in choices]

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        self.load()
        return run_sync(self._agenerate(requests))

    async def _agenerate(self, requests: list[GenerationRequest]) -> list[Generation]:
        import httpx

        with self._counter_lock:
            starts = [next(self._counter) for _ in requests]
        semaphore = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits, headers=self._headers()) as client:
            return list(await asyncio.gather(
                *(self._one(client, semaphore, start, r) for start, r in zip(starts, requests))))

    async def _one(self, client: Any, semaphore: asyncio.Semaphore, start: int,
                   request: GenerationRequest) -> Generation:
        import httpx

        body = self._body(request)
        path = "/chat/completions" if self.chat else "/completions"
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            url = self.base_urls[(start + attempt) % len(self.base_urls)]
            retry_after = 0.0
            async with semaphore:
                self.stats[url] += 1
                try:
                    response = await client.post(url + path, json=body)
                except (httpx.TimeoutException, httpx.TransportError) as err:
                    last = f"{url}: {type(err).__name__} {err}".strip()
                    response = None
            if response is not None:
                if response.status_code == 200:
                    try:
                        return Generation(request, self._texts(response.json()))
                    except (ValueError, KeyError, TypeError, AttributeError) as err:
                        self.stats["errors"] += 1
                        return Generation(request, [], errors=[f"unreadable server response ({err})"])
                detail = response.text[:300]
                if response.status_code == 400:
                    self.stats["errors"] += 1
                    return Generation(request, [], errors=[f"server refused the request (HTTP 400): {detail}"])
                if response.status_code not in RETRY_STATUSES:
                    raise GenerationError(f"openai backend: {url}{path}: HTTP {response.status_code}: {detail}")
                last = f"{url}: HTTP {response.status_code}: {detail}"
                try:
                    retry_after = float(response.headers.get("retry-after") or 0)
                except ValueError:
                    retry_after = 0.0
            if attempt < self.max_retries:
                self.stats["retries"] += 1
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
                await asyncio.sleep(min(self.max_backoff_s, max(delay, retry_after)))
        raise GenerationError(f"openai backend: gave up after {self.max_retries + 1} attempts; last: {last}")
