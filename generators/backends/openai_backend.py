"""The ``openai`` backend: any OpenAI-compatible server (``vllm serve``, ...), one or many.

This is how generation scales past one machine: start ``vllm serve`` (or
``python -m vllm.entrypoints.openai.api_server``) on each GPU host and list their base URLs.

Requests go through the ``openai`` SDK's async client, with its retries: 408, 409, 429, 5xx,
time-outs and connection errors are retried ``max_retries`` times with exponential backoff (0.5 s
doubling up to 8 s, with jitter; a server's ``Retry-After`` is honoured). What lune adds is a
transport under the SDK's HTTP client that spreads the attempts over the base URLs: a request starts
on URL ``i`` (round-robin over requests) and its ``k``-th retry goes to URL ``i + k``, so a dead host
only slows things down; the same transport keeps at most ``concurrency`` requests in flight (a
request waiting out its backoff does not hold a slot). A request the server refuses as bad (HTTP
400, e.g. a prompt longer than the context) becomes an error on that request (a ``rejections`` row),
not a failed batch; an exhausted retry budget or an auth / not-found error fails the batch.

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
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, ClassVar, Literal

from lune.data.errors import LuneError
from lune.generators.base import Generation, GenerationRequest
from lune.generators.config import OpenAIOptions

START_HEADER = "x-lune-start-url"  # the URL index a request starts on (read and removed by the transport)
NO_KEY = "none"  # the SDK needs some key; a server started without --api-key ignores it


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


def spreading_transport(base_urls: Sequence[str], concurrency: int, stats: Counter[str]) -> Any:
    """An ``httpx2`` transport (the SDK's HTTP library) that sends attempt ``k`` of a request that
    starts on URL ``i`` to ``base_urls[(i + k) % len(base_urls)]``, at most ``concurrency`` at once.

    The SDK numbers its attempts in the ``x-stainless-retry-count`` header; the client's own base
    URL is ``base_urls[0]``, whose prefix is swapped for the chosen one.
    """
    import httpx2

    class SpreadingTransport(httpx2.AsyncHTTPTransport):
        def __init__(self) -> None:
            super().__init__(limits=httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))
            self.slots = asyncio.Semaphore(concurrency)

        async def handle_async_request(self, request: Any) -> Any:
            start = int(request.headers.pop(START_HEADER, 0))
            attempt = int(request.headers.get("x-stainless-retry-count", 0))
            url = base_urls[(start + attempt) % len(base_urls)]
            tail = str(request.url)[len(base_urls[0]) :]
            request.url = httpx2.URL(url + tail)
            request.headers["host"] = request.url.netloc.decode("ascii")
            stats[url] += 1
            stats["retries"] += attempt > 0
            async with self.slots:
                return await super().handle_async_request(request)

    return SpreadingTransport()


class OpenAIGenerator:
    """Client of one or more OpenAI-compatible servers (see the module docstring).

    ``base_urls``: one URL or a list. ``model``: the served model name (default: the first model the
    first server lists). ``api_key``: default ``$OPENAI_API_KEY``, else none. ``chat``: use
    ``/chat/completions`` with the requests' messages instead of ``/completions`` with their prompt.
    ``extra_body``: more fields for every request body (server-specific sampling options).
    The keyword options are the fields of :class:`~lune.generators.config.OpenAIOptions`.
    """

    name = "openai"
    raw_output = False
    expands_attack_types = True
    thread_safe = True
    options_model: ClassVar[type[OpenAIOptions]] = OpenAIOptions
    shared_settings: ClassVar[tuple[str, ...]] = ("model",)

    def __init__(
        self,
        base_urls: str | Sequence[str],
        model: str | None = None,
        *,
        api_key: str | None = None,
        chat: bool = False,
        concurrency: int = 16,
        max_retries: int = 5,
        timeout_s: float = 120.0,
        json_mode: Literal["structured_outputs", "response_format", "none"] = "structured_outputs",
        extra_body: dict[str, Any] | None = None,
    ):
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
        self.json_mode = json_mode
        self.extra_body = dict(extra_body or {})
        self.stats: Counter[str] = Counter()  # attempts per URL, retries, errors (for logs and tests)
        self._counter = itertools.count()
        self._counter_lock = threading.Lock()

    @staticmethod
    def identity(options: Mapping[str, Any]) -> dict[str, Any]:
        """What of the options shapes the output (not URLs, keys or concurrency)."""
        return {"model": options["model"], "chat": options["chat"], "json_mode": options["json_mode"]}

    @property
    def model_name(self) -> str:
        return self.model or "unknown"

    def load(self) -> None:
        """Ask the first server that answers which model it serves, when none was given."""
        if self.model:
            return
        import openai

        problems = []
        for url in self.base_urls:
            client = openai.OpenAI(base_url=url, api_key=self.api_key or NO_KEY, max_retries=0, timeout=self.timeout_s)
            try:
                self.model = client.models.list().data[0].id
                return
            except (openai.OpenAIError, IndexError, AttributeError) as err:
                problems.append(f"{url}: {err}")
            finally:
                client.close()
        raise GenerationError("openai backend: no server told its model name; give `model`. " + "; ".join(problems))

    def _arguments(self, request: GenerationRequest) -> dict[str, Any]:
        """Keyword arguments of the SDK's ``completions.create`` / ``chat.completions.create``."""
        arguments: dict[str, Any] = {
            "model": self.model,
            "n": request.n,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
        }
        if request.seed is not None:
            arguments["seed"] = request.seed
        if request.stop:
            arguments["stop"] = list(request.stop)
        if self.chat:
            arguments["messages"] = request.messages or [{"role": "user", "content": request.prompt}]
        else:
            arguments["prompt"] = request.prompt
        extra_body = dict(self.extra_body)
        if request.json_schema is not None and self.json_mode == "structured_outputs":
            extra_body["structured_outputs"] = {"json": request.json_schema}
        elif request.json_schema is not None and self.json_mode == "response_format":
            # a body field, not an argument: the SDK's completions.create has no response_format
            extra_body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "candidate", "schema": request.json_schema},
            }
        if extra_body:
            arguments["extra_body"] = extra_body
        return arguments

    def _texts(self, completion: Any) -> list[str]:
        choices = sorted(completion.choices, key=lambda c: c.index or 0)
        if self.chat:
            return [c.message.content or "" for c in choices]
        return [c.text or "" for c in choices]

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        self.load()
        return run_sync(self._agenerate(requests))

    async def _agenerate(self, requests: list[GenerationRequest]) -> list[Generation]:
        import openai

        with self._counter_lock:
            starts = [next(self._counter) % len(self.base_urls) for _ in requests]
        http_client = openai.DefaultAsyncHttpx2Client(
            transport=spreading_transport(self.base_urls, self.concurrency, self.stats)
        )
        async with openai.AsyncOpenAI(
            base_url=self.base_urls[0],
            api_key=self.api_key or NO_KEY,
            max_retries=self.max_retries,
            timeout=self.timeout_s,
            http_client=http_client,
        ) as client:
            return list(await asyncio.gather(*(self._one(client, start, r) for start, r in zip(starts, requests))))

    async def _one(self, client: Any, start: int, request: GenerationRequest) -> Generation:
        import openai

        create = client.chat.completions.create if self.chat else client.completions.create
        try:
            completion = await create(**self._arguments(request), extra_headers={START_HEADER: str(start)})
        except openai.BadRequestError as err:
            self.stats["errors"] += 1
            return Generation(request, [], errors=[f"server refused the request (HTTP 400): {_detail(err)}"])
        except openai.APIStatusError as err:
            if err.status_code in (408, 409, 429) or err.status_code >= 500:
                raise self._gave_up(f"{err.request.url}: HTTP {err.status_code}: {_detail(err)}") from None
            raise GenerationError(
                f"openai backend: {err.request.url}: HTTP {err.status_code}: {_detail(err)}"
            ) from None
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            raise self._gave_up(f"{err.request.url}: {type(err).__name__} {err.__cause__ or err}") from None
        try:
            return Generation(request, self._texts(completion))
        except (AttributeError, TypeError) as err:
            self.stats["errors"] += 1
            return Generation(request, [], errors=[f"unreadable server response ({err})"])

    def _gave_up(self, last: str) -> GenerationError:
        return GenerationError(f"openai backend: gave up after {self.max_retries + 1} attempts; last: {last}")


def _detail(err: Any) -> str:
    """The start of the server's answer to a failed request."""
    return (err.response.text if err.response is not None else str(err))[:300]
