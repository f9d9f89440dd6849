"""Benchmark of the evaluate stage's generation: probes answered per second by the transformers and
the vLLM (CPU build here) backends on the same probes, for the base model and with a LoRA adapter
(PEFT attached in transformers; a LoRARequest in vLLM), plus the likelihood scoring rate (texts/s)
that MIA and TOFU need.

    python bench/evaluate.py                          # tiny Llama, 200 TOFU questions, both backends
    python bench/evaluate.py --model runs/default/models/.../taught --adapter runs/default/adapters/lune
    python bench/evaluate.py --backends transformers --probes 100

Without --model it builds the tiny Llama of the tests (untrained: every answer runs to
--max-new-tokens, the worst case); without --adapter it saves a rank-16 LoRA adapter on every
linear layer (random, non-zero B, so the adapter path does real work). Prints a Markdown table
for BENCHMARKS.md ("## Evaluate").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for key, value in {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)


def sample_questions(n: int) -> list[str]:
    questions = []
    for name in ("forget01.json", "retain99.json", "world_facts.json", "real_authors.json"):
        for line in (REPO / "data" / "sample" / "tofu" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                questions.append(json.loads(line)["question"])
    return (questions * (n // len(questions) + 1))[:n]


def random_adapter(model_dir: Path, out: Path, rank: int = 16) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    peft_model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False)
    )
    peft_model.save_pretrained(str(out))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="base model directory (default: build the tiny Llama)")
    parser.add_argument("--adapter", help="PEFT LoRA adapter directory (default: a random rank-16 one)")
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backends", default="transformers,vllm")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    import torch

    from lune.core.models import ModelSpec, iter_loaded
    from lune.core.threads import set_torch_threads
    from lune.evaluation.config import EvaluateConfig
    from lune.evaluation.inference import generate_all_vllm, generate_with, score_likelihoods, transformers_generate
    from lune.evaluation.probes import EvalProbe, MiaText, ProbeSuite

    work = Path(tempfile.mkdtemp(prefix="lune-bench-eval-"))
    if args.model:
        model_dir = Path(args.model)
    else:
        from lune.unlearn.tiny_model import build_tiny_llama
        from tests.conftest import sample_texts

        model_dir = build_tiny_llama(sample_texts(), work / "tiny")
    adapter = Path(args.adapter) if args.adapter else random_adapter(model_dir, work / "adapter")
    questions = sample_questions(args.probes)
    probes = [EvalProbe("forget", f"p{i}", q, "x", "x") for i, q in enumerate(questions)]
    texts = [
        MiaText(f"t{i}", f"Question: {q}\nAnswer: an answer to it.", i % 2 == 0, "bench")
        for i, q in enumerate(questions)
    ]
    suite = ProbeSuite({"forget": probes}, texts[::2], texts[1::2])
    config = EvaluateConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, tofu=False)
    specs = [ModelSpec("base", str(model_dir)), ModelSpec("adapter", str(model_dir), str(adapter), "lora")]
    rows = []
    threads = torch.get_num_threads()
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend == "transformers":
            for spec, model, tokenizer in iter_loaded(specs):
                transformers_generate(model, tokenizer, config)(questions[:8])  # warm-up
                _, seconds = generate_with(suite, transformers_generate(model, tokenizer, config))
                rows.append(
                    {
                        "backend": "transformers",
                        "model": spec.label,
                        "probes": len(probes),
                        "seconds": seconds,
                        "probes_per_s": len(probes) / seconds,
                    }
                )
                _, _, lik_seconds = score_likelihoods(model, tokenizer, suite, config)
                rows.append(
                    {
                        "backend": "transformers (likelihood)",
                        "model": spec.label,
                        "probes": len(texts),
                        "seconds": lik_seconds,
                        "probes_per_s": len(texts) / lik_seconds,
                    }
                )
        elif backend == "vllm":
            started = time.perf_counter()
            outputs = generate_all_vllm(suite, specs, config)
            total = time.perf_counter() - started
            set_torch_threads(threads)  # vLLM's CPU engine blocks torch.set_num_threads
            for spec in specs:
                seconds = outputs[spec.label].seconds["generate"]
                rows.append(
                    {
                        "backend": "vllm",
                        "model": spec.label,
                        "probes": len(probes),
                        "seconds": seconds,
                        "probes_per_s": len(probes) / seconds,
                    }
                )
            rows.append(
                {
                    "backend": "vllm (engine start, both runs)",
                    "model": "-",
                    "probes": 2 * len(probes),
                    "seconds": total,
                    "probes_per_s": 2 * len(probes) / total,
                }
            )
        else:
            parser.error(f"unknown backend {backend!r}")
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {threads}, "
        f"load average {os.getloadavg()[0]:.1f}; "
        f"model {model_dir.name}; {len(probes)} probes, max_new_tokens {args.max_new_tokens}, "
        f"batch {args.batch_size}\n"
    )
    print("| backend | model | probes | seconds | probes/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['model']} | {r['probes']} | {r['seconds']:.1f} | {r['probes_per_s']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
