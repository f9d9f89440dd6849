"""Benchmark of the generate stage.

    python bench/generate.py                  # everything below, figures as a Markdown table
    python bench/generate.py --only rules     # the rules backend only (no model, seconds)
    python bench/generate.py --only engines   # transformers vs vLLM (CPU build), same model and prompts

1. Rules backend: candidates/s of ``generators.generate.run_backend`` (requests, rules, row building
   with ids) on the shipped TOFU sample replicated to ``--facts`` facts (distinct ids), every kind
   (negative, paraphrase, the nine attack families, refusal), n = 8. Target: at least 10,000/s.
   With ``--flow``, also through the Prefect flow into a fresh store (batches, one writer).
2. Engines: the tiny Llama of ``unlearn.tiny_model`` (4 layers, width 256), the same counterfactual
   prompts (plain), n = 4 samples of up to 32 tokens at temperature 1, through the transformers
   backend and the vllm backend (each in its own process: vLLM changes torch's thread count);
   generated tokens / s, with tokens counted by the one tokenizer on both sides.

Wall time and CPU time are both given: on a shared machine the wall time also measures the others.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO / "data" / "sample" / "tofu"


def sample_facts(copies: int = 1) -> list[dict]:
    """The shipped TOFU sample's facts (key spans derived as ingest does), replicated ``copies`` times."""
    from lune.data.key_span import key_span_for
    from lune.data.records import fact_id

    base = []
    for stem, split in (
        ("forget01", "forget"),
        ("retain99", "retain"),
        ("world_facts", "utility"),
        ("real_authors", "utility"),
    ):
        for line in (SAMPLE / f"{stem}.json").read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                key, _ = key_span_for(row["question"], row["answer"])
                base.append(
                    {
                        "fact_id": fact_id("tofu", row["question"], row["answer"]),
                        "corpus": "tofu",
                        "question": row["question"],
                        "answer": row["answer"],
                        "key_span": key,
                        "subject": None,
                        "split": split,
                        "group_name": stem,
                    }
                )
    return [dict(f, fact_id=f"{f['fact_id']}-{k}") for k in range(copies) for f in base]


def bench_rules(n_facts: int) -> dict:
    from lune.data.records import CANDIDATE_KINDS
    from lune.generators.backends import RulesGenerator
    from lune.generators.config import GenerateConfig
    from lune.generators.generate import run_backend
    from lune.generators.rules.spans import SpanBank

    base = sample_facts()
    facts = sample_facts(max(1, -(-n_facts // len(base))))[:n_facts]
    bank = SpanBank.from_facts(facts)
    settings = GenerateConfig(kinds=list(CANDIDATE_KINDS), n=8, include_dataset=False)
    run_backend(facts[:200], RulesGenerator(bank=bank), settings)  # warm the caches of the span matcher
    wall, cpu = time.perf_counter(), time.process_time()
    out = run_backend(facts, RulesGenerator(bank=bank), settings)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    count = len(out["candidates"])
    return {
        "facts": len(facts),
        "candidates": count,
        "rejections": len(out["rejections"]),
        "wall_s": wall,
        "cpu_s": cpu,
        "per_s_wall": count / wall,
        "per_s_cpu": count / cpu,
        "by_kind": out["stats"]["by_kind"],
    }


def bench_rules_flow(n_facts: int) -> dict:
    from lune.data.records import CANDIDATE_KINDS, Fact
    from lune.data.store import Store
    from lune.flows.generate import build_negatives

    facts = sample_facts(max(1, -(-n_facts // 261)))[:n_facts]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        with Store.open(db) as store:
            rows = [
                Fact(
                    corpus="tofu",
                    source_file="bench",
                    question=f"{f['question']} ({f['fact_id'][-4:]})",
                    answer=f["answer"],
                    key_span=f["key_span"],
                    key_span_source="derived",
                    split="forget",
                ).to_row()
                for f in facts
            ]
            store.insert("facts", rows)
        wall = time.perf_counter()
        summary = build_negatives(
            str(db),
            {"backend": "rules", "n": 8, "batch_size": 1024, "include_dataset": False, "kinds": list(CANDIDATE_KINDS)},
        )
        wall = time.perf_counter() - wall
    return {
        "facts": len(facts),
        "candidates": summary["new_candidates"],
        "flow_s": summary["seconds"],
        "wall_s_with_prefect_start": wall,
        "per_s": summary["new_candidates"] / summary["seconds"],
    }


def bench_engine(engine: str, model_dir: str, n_prompts: int) -> dict:
    """Runs in its own process (see main)."""
    from lune.generators.config import GenerateConfig
    from lune.generators.generate import build_requests
    from lune.generators.strategies import strategies_for

    facts = sample_facts()[:n_prompts]
    settings = GenerateConfig(
        kinds=("negative",), n=4, temperature=1.0, top_p=1.0, max_tokens=32, structured=False, include_dataset=False
    )
    requests = [r for r in build_requests(facts, strategies_for(settings.kinds), settings)]
    requests = [type(r)(**{**r.__dict__, "stop": []}) for r in requests]  # full length: measure decoding
    if engine == "vllm":
        from lune.generators.backends import VLLMGenerator

        gen = VLLMGenerator(model_dir)
    else:
        from lune.generators.backends import TransformersGenerator

        gen = TransformersGenerator(model_dir, batch_size=64)
    load = time.perf_counter()
    gen.load()
    load = time.perf_counter() - load
    gen.generate(requests[:4])  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    out = gen.generate(requests)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tokens = sum(len(tok(t, add_special_tokens=False).input_ids) for g in out for t in g.texts)
    prompt_tokens = sum(len(tok(r.prompt).input_ids) for r in requests)
    return {
        "engine": engine,
        "prompts": len(requests),
        "samples": sum(len(g.texts) for g in out),
        "prompt_tokens": prompt_tokens,
        "generated_tokens": tokens,
        "load_s": load,
        "wall_s": wall,
        "cpu_s": cpu,
        "tokens_per_s": tokens / wall,
        "torch_threads": _threads(),
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def tiny_model(cache: Path) -> str:
    from lune.unlearn.tiny_model import build_tiny_llama

    texts = []
    for path in sorted(SAMPLE.glob("*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts.append(f"{row['question']} {row['answer']}")
    return str(build_tiny_llama(texts, cache))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["rules", "engines"])
    parser.add_argument("--facts", type=int, default=5000, help="facts for the rules benchmark")
    parser.add_argument("--prompts", type=int, default=64, help="prompts for the engine benchmark")
    parser.add_argument("--flow", action="store_true", help="also time the rules backend through the flow")
    parser.add_argument("--engine", choices=["transformers", "vllm"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.engine:  # a child process of the engine comparison
        print(json.dumps(bench_engine(args.engine, args.model, args.prompts)))
        return

    if args.only in (None, "rules"):
        r = bench_rules(args.facts)
        print(
            f"rules: {r['candidates']:,} candidates for {r['facts']:,} facts in {r['wall_s']:.2f} s wall "
            f"({r['per_s_wall']:,.0f}/s), {r['cpu_s']:.2f} s CPU ({r['per_s_cpu']:,.0f}/s); "
            f"{r['rejections']:,} rejections; {r['by_kind']}"
        )
        if args.flow:
            f = bench_rules_flow(args.facts)
            print(
                f"rules through the flow: {f['candidates']:,} candidates in {f['flow_s']:.2f} s "
                f"({f['per_s']:,.0f}/s; {f['wall_s_with_prefect_start']:.1f} s with Prefect's start)"
            )

    if args.only in (None, "engines"):
        cache = Path(tempfile.gettempdir()) / "lune-bench-tiny-llama"
        model = tiny_model(cache)
        rows = []
        for engine in ("transformers", "vllm"):
            done = subprocess.run(
                [sys.executable, __file__, "--engine", engine, "--model", model, "--prompts", str(args.prompts)],
                capture_output=True,
                text=True,
                check=False,
            )
            last = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not last:
                print(f"{engine}: failed\n{done.stderr[-2000:]}")
                continue
            rows.append(json.loads(last[-1]))
        print("\n| engine | prompts x samples | generated tokens | load | generate (wall) | CPU | tokens/s |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['engine']} | {r['prompts']} x 4 | {r['generated_tokens']:,} | {r['load_s']:.1f} s | "
                f"{r['wall_s']:.1f} s | {r['cpu_s']:.1f} s | {r['tokens_per_s']:,.0f} |"
            )


if __name__ == "__main__":
    main()
