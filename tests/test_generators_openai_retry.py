"""The openai backend's HTTP behaviour: the openai SDK's retries with backoff, failover to the next URL,
round-robin, bounded concurrency.

The server here is a boundary fake: a small local HTTP server that answers like an
OpenAI-compatible `/v1/completions` endpoint but fails on purpose (429, 503, 400, slow answers),
which a real vLLM server cannot be made to do on demand. The real server path is tested in
tests/test_vllm_openai_server.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lune.generators.backends import OpenAIGenerator
from lune.generators.backends.openai_backend import GenerationError, normalize_base_url
from lune.generators.base import GenerationRequest


class FakeServer:
    """Answers POST /v1/completions from a script of statuses (then 200), counting what it saw."""

    def __init__(self, script: list[int] | None = None, delay_s: float = 0.0, model: str = "fake-model"):
        self.script = list(script or [])
        self.delay_s = delay_s
        self.model = model
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"data": [{"id": server.model}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.bodies.append(body)
                    status = server.script.pop(0) if server.script else 200
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_s)
                    if status != 200:
                        self._send(
                            status,
                            {"error": {"message": f"scripted {status}"}},
                            {"Retry-After": "0"} if status == 429 else None,
                        )
                        return
                    choices = [
                        {"index": i, "text": f"{body['prompt']}|{i}|{body.get('seed')}"}
                        for i in range(body.get("n", 1))
                    ]
                    self._send(200, {"choices": choices})
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[FakeServer]]:
    made: list[FakeServer] = []
    yield made
    for s in made:
        s.close()


def serve(servers: list[FakeServer], **kwargs) -> FakeServer:
    server = FakeServer(**kwargs)
    servers.append(server)
    return server


def requests(k: int, n: int = 2) -> list[GenerationRequest]:
    return [GenerationRequest(prompt=f"p{i}", n=n, temperature=0.7, max_tokens=8, seed=i) for i in range(k)]


def test_retries_429_then_succeeds(servers) -> None:
    server = serve(servers, script=[429, 429])
    gen = OpenAIGenerator(server.url)
    out = gen.generate(requests(1))
    assert out[0].texts == ["p0|0|0", "p0|1|0"] and out[0].errors == []
    assert len(server.bodies) == 3 and gen.stats["retries"] == 2
    assert gen.model_name == "fake-model"  # asked the server


def test_backoff_grows_exponentially(servers) -> None:
    server = serve(servers, script=[503, 503, 503])
    gen = OpenAIGenerator(server.url, model="m")
    started = time.perf_counter()
    gen.generate(requests(1))
    # the openai SDK's schedule: 0.5 s doubling, less up to 25 % jitter
    assert time.perf_counter() - started >= 0.75 * (0.5 + 1 + 2)
    assert gen.stats["retries"] == 3


def test_time_outs_are_retried_on_the_next_url(servers) -> None:
    slow, fast = serve(servers, delay_s=1.5), serve(servers)
    gen = OpenAIGenerator([slow.url, fast.url], model="m", timeout_s=0.5)
    out = gen.generate(requests(4))
    assert all(len(g.texts) == 2 for g in out)
    assert len(slow.bodies) == 2 and len(fast.bodies) == 4  # two started on the slow one, then moved


def test_failover_to_the_next_url(servers) -> None:
    dead = serve(servers, script=[503] * 100)
    alive = serve(servers)
    gen = OpenAIGenerator([dead.url, alive.url], model="m")
    out = gen.generate(requests(6))
    assert all(len(g.texts) == 2 for g in out)
    assert len(alive.bodies) == 6 and len(dead.bodies) == 3  # half started on the dead one, then moved


def test_requests_spread_round_robin(servers) -> None:
    a, b = serve(servers), serve(servers)
    gen = OpenAIGenerator([a.url, b.url + "/v1/"], model="m")
    out = gen.generate(requests(10))
    assert len(a.bodies) == len(b.bodies) == 5
    assert [g.texts[0] for g in out] == [f"p{i}|0|{i}" for i in range(10)]  # order kept


def test_concurrency_is_bounded(servers) -> None:
    server = serve(servers, delay_s=0.05)
    OpenAIGenerator(server.url, model="m", concurrency=3).generate(requests(12))
    assert server.max_in_flight == 3


def test_bad_request_is_an_error_on_that_request_only(servers) -> None:
    server = serve(servers, script=[400])
    out = OpenAIGenerator(server.url, model="m", concurrency=1).generate(requests(2))
    assert out[0].texts == [] and "HTTP 400" in out[0].errors[0]
    assert len(out[1].texts) == 2


def test_exhausted_retries_and_auth_errors_fail_the_call(servers) -> None:
    busy = serve(servers, script=[429] * 10)
    with pytest.raises(GenerationError, match="gave up after 3 attempts"):
        OpenAIGenerator(busy.url, model="m", max_retries=2).generate(requests(1))
    denied = serve(servers, script=[401])
    with pytest.raises(GenerationError, match="HTTP 401"):
        OpenAIGenerator(denied.url, model="m").generate(requests(1))


def test_connection_errors_are_retried(servers) -> None:
    alive = serve(servers)
    gen = OpenAIGenerator(["http://127.0.0.1:9", alive.url], model="m", timeout_s=2)
    assert all(len(g.texts) == 2 for g in gen.generate(requests(4)))


def test_request_body_carries_sampling_and_schema(servers) -> None:
    server = serve(servers)
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    request = GenerationRequest(
        prompt="p", n=3, temperature=0.5, top_p=0.9, max_tokens=7, seed=11, stop=["\n"], json_schema=schema
    )
    OpenAIGenerator(server.url, model="m").generate([request])
    OpenAIGenerator(server.url, model="m", json_mode="response_format").generate([request])
    vllm_body, openai_body = server.bodies
    assert {
        k: vllm_body[k] for k in ("model", "prompt", "n", "temperature", "top_p", "max_tokens", "seed", "stop")
    } == {
        "model": "m",
        "prompt": "p",
        "n": 3,
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 7,
        "seed": 11,
        "stop": ["\n"],
    }
    assert vllm_body["structured_outputs"] == {"json": schema}
    assert openai_body["response_format"]["json_schema"]["schema"] == schema


def test_works_inside_a_running_event_loop(servers) -> None:
    import asyncio

    server = serve(servers)
    gen = OpenAIGenerator(server.url, model="m")

    async def caller():
        return gen.generate(requests(2))

    assert len(asyncio.run(caller())) == 2


def test_normalize_base_url() -> None:
    assert normalize_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalize_base_url("http://h:8000/v1/") == "http://h:8000/v1"
