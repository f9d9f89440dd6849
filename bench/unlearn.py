"""Benchmark of the unlearn stage: LUNE (LoRA, frozen backbone) against full fine-tuning with the
same loss (``full_ft``), on the same model and data, side by side in one run.

    python bench/unlearn.py                        # the tiny Llama taught the TOFU sample (CPU)
    python bench/unlearn.py --json out.json        # also write the figures as JSON
    python bench/unlearn.py --shape 1b --steps 20  # cost only: a randomly initialised Llama-shaped
    python bench/unlearn.py --shape 7b --steps 20  # model of ~1B / ~7B parameters (meant for a GPU)
    python bench/unlearn.py --shape 135m --steps 5 --batch-size 4 --seq-len 128   # the same on a CPU

Default mode: teach the tiny Llama the whole sample (261 facts; cached under --workdir), build the
curated set from TOFU's perturbed answers (``unlearn.sample_set``: up to 5 negatives per forget
fact and the paraphrased question; perturbed answers that still state the key span left out), then
run ``lune`` and ``full_ft`` with the same settings (no retain anchor unless --retain-anchor, so both
minimise exactly ``-log p(negative | prompt)``) until USR >= 0.9. GUR is measured and reported but
does not stop the runs (tolerance 0.99 unless --gur-tolerance): this measures the cost of reaching
the target, and what each method kept on the way.
Measured per method: trainable and total parameters, peak memory (RSS on CPU, rise over the start;
``torch.cuda.max_memory_allocated`` on GPU), time and CPU time per step, tokens/s, and the steps,
training time and wall time (training + the early-stopping checks) to reach USR >= 0.9.

Shape mode measures cost only, as the issue asks ("measuring cost needs no trained weights"):
random token batches through the trainers' own optimiser step, ``--steps`` steps after 3 warm-up.
Each method runs in its own Python process, so that its peak memory is its own.
Prints a Markdown table for BENCHMARKS.md ("## Unlearn").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for key, value in {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)

METHODS = ("lune", "full_ft")
# Llama-shaped configurations for the cost-only mode (vocabulary 32,000 like Llama 2).
SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4},
    "135m": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12},
    "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32},
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32},
}


def machine() -> str:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, {gpu}, load average {load:.1f} at the start"
    )


def teach_sample(args: argparse.Namespace) -> Any:
    """The tiny Llama taught the whole sample (cached under --workdir after the first time)."""
    from lune.unlearn.config import TeachConfig
    from lune.unlearn.sample_set import sample_facts
    from lune.unlearn.teach import teach

    started = time.perf_counter()
    taught = teach(sample_facts(), args.workdir, TeachConfig(), progress=not args.quiet)
    print(
        f"taught model: {taught.model_dir} ({'cached' if taught.cached else f'{time.perf_counter() - started:.0f} s'}"
        f", recall {taught.metrics['taught'].get('recall')})",
        file=sys.stderr,
    )
    return taught


def taught_run(args: argparse.Namespace, method: str) -> dict[str, Any]:
    from lune.unlearn.config import UnlearnConfig
    from lune.unlearn.inputs import build_data
    from lune.unlearn.run import unlearn
    from lune.unlearn.sample_set import curated_set, retain_of, sample_facts

    taught = teach_sample(args)
    facts = sample_facts()
    data = build_data(curated_set(facts), retain_of(facts))
    config = UnlearnConfig(
        method=method,
        max_steps=args.max_steps,
        eval_every=args.eval_every,
        batch_size=args.batch_size,
        retain_anchor=args.retain_anchor,
        gur_tolerance=args.gur_tolerance,
    )
    result = unlearn(
        taught.model_dir, data, Path(args.workdir) / "bench-adapters" / method, config, progress=not args.quiet
    )
    m, outcome = result.metrics, result.outcome
    target = outcome.time_to_target or {}
    return {
        "method": method,
        "trainable_params": m["trainable_params"],
        "total_params": m["total_params"],
        **cost_figures(m),
        "steps_to_target": target.get("step"),
        "train_s_to_target": target.get("train_s"),
        "train_cpu_s_to_target": target.get("train_cpu_s"),
        "wall_s_to_target": target.get("wall_s"),
        "stop_reason": m["stop_reason"],
        "kept_usr": m["kept_usr"],
        "kept_gur": m["kept_gur"],
        "out_dir": str(result.out_dir),
    }


def shape_run(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """Cost only: a random Llama of the chosen shape, random batches, the trainers' optimiser step."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lune.unlearn.config import UnlearnConfig
    from lune.unlearn.inputs import UnlearnData
    from lune.unlearn.loop import optimizer_step
    from lune.unlearn.measure import RunMeter, parameter_counts
    from lune.unlearn.methods import METHODS as TRAINERS

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    shape = SHAPES[args.shape]
    config = LlamaConfig(
        vocab_size=32000,
        max_position_embeddings=max(2048, args.seq_len),
        num_key_value_heads=shape["num_attention_heads"],
        **shape,
    )
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(3, 32000, (args.batch_size, args.seq_len), generator=gen)} for _ in range(4)]
    for batch in batches:
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
        batch["labels"] = batch["input_ids"].clone()
        batch["labels"][:, : args.seq_len // 2] = -100  # the prompt half is not scored, as in training
    empty = UnlearnData(train=[], forget=[])
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    settings = UnlearnConfig(
        method=method, batch_size=args.batch_size, gradient_checkpointing=args.checkpointing, device=device
    )
    trainer = TRAINERS[method](model, _NoTokenizer(), empty, settings, progress=False)
    trainer.model.train()
    params, optimizer, scheduler = trainer.build_optimizer()
    trainable, total = parameter_counts(trainer.model)
    meter = RunMeter(device=device).start()
    for step in range(args.steps + 3):
        batch = {k: v.to(device) for k, v in batches[step % len(batches)].items()}
        t0, c0 = time.perf_counter(), time.process_time()
        optimizer_step(
            trainer.step_loss,
            (batch,),
            params=params,
            optimizer=optimizer,
            scheduler=scheduler,
            grad_clip=settings.grad_clip,
            device=device,
        )
        if step >= 3:  # the first steps allocate optimiser state and warm kernels up
            meter.step(time.perf_counter() - t0, int(batch["attention_mask"].sum()), time.process_time() - c0)
    m = meter.stop()
    return {
        "method": method,
        "shape": args.shape,
        "trainable_params": trainable,
        "total_params": total,
        **cost_figures(m),
    }


def cost_figures(m: dict[str, Any]) -> dict[str, Any]:
    """Memory and speed of a run, from the metrics of ``RunMeter.stop``."""
    return {
        "peak_rss_rise_mib": m["peak_rss_rise_mib"],
        "peak_rss_mib": m["peak_rss_mib"],
        "peak_gpu_mib": m.get("peak_gpu_mib"),
        "step_s_mean": m["step_s_mean"],
        "step_s_median": m["step_s_median"],
        "step_cpu_s": round(m["train_cpu_s"] / m["steps"], 5),
        "tokens_per_s": m["tokens_per_s"],
    }


RESULT = "BENCH-RESULT "


def run_in_own_process(argv: list[str], method: str) -> dict[str, Any]:
    """One method in a fresh Python process: its peak memory is its own, not the previous method's
    (a second run in one process reuses the memory the allocator kept from the first)."""
    done = subprocess.run(
        [sys.executable, __file__, *argv, "--one", method], stdout=subprocess.PIPE, text=True, check=True
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith(RESULT))
    return json.loads(line[len(RESULT) :])


class _NoTokenizer:
    """Shape mode trains on random ids: the trainer only asks the tokenizer for its pad id."""

    pad_token_id = 0
    eos_token = "</s>"


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    columns = [
        ("method", "method"),
        ("trainable_params", "trainable params"),
        ("total_params", "total params"),
        ("peak_rss_rise_mib", "peak RSS rise (MiB)"),
        ("peak_gpu_mib", "peak GPU (MiB)"),
        ("step_s_median", "s/step (median)"),
        ("step_cpu_s", "CPU s/step"),
        ("tokens_per_s", "tokens/s"),
        ("steps_to_target", "steps to USR>=0.9"),
        ("train_s_to_target", "train s to USR>=0.9"),
        ("wall_s_to_target", "wall s to USR>=0.9 (with checks)"),
        ("kept_usr", "USR"),
        ("kept_gur", "GUR"),
    ]
    columns = [c for c in columns if any(c[0] in r and r[c[0]] is not None for r in rows)]
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(key)) for key, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), help="cost-only mode on a random Llama of this shape")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--workdir", default="runs/bench", help="teach cache and adapters (default: runs/bench)")
    parser.add_argument("--max-steps", type=int, default=300, help="step limit of each run (default 300)")
    parser.add_argument("--eval-every", type=int, default=5, help="early-stopping check every k steps (default 5)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--retain-anchor", choices=["none", "nll", "kl"], default="none")
    parser.add_argument(
        "--gur-tolerance",
        type=float,
        default=0.99,
        help="early stopping on GUR (default 0.99: report GUR, do not stop on it)",
    )
    parser.add_argument("--steps", type=int, default=20, help="shape mode: measured steps (default 20)")
    parser.add_argument("--seq-len", type=int, default=256, help="shape mode: tokens per sequence (default 256)")
    parser.add_argument("--checkpointing", action="store_true", help="shape mode: gradient checkpointing on")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--one", choices=list(METHODS), help=argparse.SUPPRESS)  # internal: one method, JSON out
    args = parser.parse_args(argv)

    import torch

    torch.set_flush_denormal(True)
    if args.one:
        row = shape_run(args, args.one) if args.shape else taught_run(args, args.one)
        print(RESULT + json.dumps(row))
        return 0
    where = machine()
    if not args.shape:
        teach_sample(args)  # once, before the methods' processes (which then find it cached)
    rows = [run_in_own_process(argv if argv is not None else sys.argv[1:], method) for method in args.methods]
    print(f"\nmachine: {where}\n")
    print(table(rows))
    if len(rows) == 2 and rows[0]["method"] == "lune":
        lune, full = rows
        ratios = {"trainable params": full["trainable_params"] / lune["trainable_params"]}
        for key, label in (
            ("peak_gpu_mib", "peak GPU memory"),
            ("peak_rss_rise_mib", "peak RSS rise"),
            ("step_s_median", "time per step"),
            ("train_s_to_target", "train time to USR>=0.9"),
        ):
            if lune.get(key) and full.get(key):
                ratios[label] = full[key] / lune[key]
        print("\nfull_ft / lune: " + ", ".join(f"{k} x{v:.3g}" for k, v in ratios.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": where, "args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
