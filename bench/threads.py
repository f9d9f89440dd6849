"""Benchmark of lune's torch thread sizing (``core/threads.py``) on a shared machine.

    python bench/threads.py competitor     # a lune stage alone, then beside one CPU-bound process
    python bench/threads.py workers        # a small sweep grid on 1 worker, then on 2 Dask workers
    python bench/threads.py pair           # what 2 single-threaded processes get from this machine
    python bench/threads.py all --json out.json

Run it on an otherwise idle machine (the claims are about one competitor, not an unknown load).

``competitor``: the stage is a fixed training workload of the teach / unlearn kind (the tiny Llama,
``--steps`` optimiser steps over the TOFU sample's facts, in its own process, threads sized by
``core.threads.torch_threads`` as the stages size them). It runs (1) alone, (2) beside one
CPU-bound competitor: another torch process multiplying matrices on as many threads as the
machine has cores (torch's default, like the measured case of issue 19), and (3) beside the same
competitor with the sizing overridden to every core (``LUNE_THREADS``: lune before this sizing),
stopped after ``--limit`` seconds. Target: (2) / (1) <= 2.5.

``workers``: ``lune sweep`` over a grid of ``--points`` LoRA ranks on a small TOFU slice (shared
stages prepared first, outside the timing); the points then run on 1 worker (threads runner), on
2 Dask worker processes (a local cluster the sweep starts), and on 2 Dask workers of a cluster
already running and warmed (``sweep.dask_address``; started outside the timing). Target: 2 workers
no slower than 1.

``pair``: the machine's side of that target, without lune's sweep around it. The stage's training
workload on 1 thread alone, on 2 threads alone, and as two 1-thread processes at once. Two
processes can only beat one 2-thread process when the pair's throughput (steps a second, both
together) is above the 2-thread one's; if each of the pair runs much slower than the 1-thread stage
alone, the cores contend below the operating system (shared caches, memory bandwidth, or virtual
CPUs that are hyperthreads of one physical core).
Prints a Markdown table; ``--json`` also writes the figures.
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
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for key, value in {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)

COMPETITOR = """
import torch, time
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a)
"""

STAGE = """
import json, sys, time
import torch
from lune.core.threads import torch_threads
from lune.unlearn.tiny_model import build_tiny_llama
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, steps = sys.argv[1], int(sys.argv[2])
texts = json.load(open(folder + "/texts.json"))
model = AutoModelForCausalLM.from_pretrained(folder + "/model")
tok = AutoTokenizer.from_pretrained(folder + "/model")
tok.pad_token = tok.pad_token or tok.eos_token
torch.manual_seed(0)
torch.set_flush_denormal(True)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
with torch_threads() as threads:
    started = time.perf_counter()
    for step in range(steps):
        batch = texts[(step * 16) % len(texts):][:16]
        enc = tok(batch, return_tensors="pt", padding=True, truncation=True, max_length=64)
        loss = model(**enc, labels=enc["input_ids"]).loss
        loss.backward(); opt.step(); opt.zero_grad()
    seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "threads": threads}))
"""


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LUNE_THREADS")}
    return {**out, **extra}


def prepare_model(folder: Path) -> None:
    from lune.unlearn.tiny_model import build_tiny_llama

    texts = []
    for path in sorted((REPO / "data" / "sample" / "tofu").glob("*.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts.append(f"{row['question']} {row['answer']}")
    (folder / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    if not (folder / "model").exists():
        build_tiny_llama(texts, folder / "model")


def run_stage(folder: Path, steps: int, limit: float, **extra: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        out = subprocess.run(
            [sys.executable, "-c", STAGE, str(folder), str(steps)],
            capture_output=True,
            text=True,
            timeout=limit,
            env=env(**extra),
            check=True,
        )
    except subprocess.TimeoutExpired:
        return {"seconds": None, "stopped_after": round(time.perf_counter() - started, 1)}
    return json.loads(out.stdout.strip().splitlines()[-1])


def competitor(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    prepare_model(folder)
    run_stage(folder, 2, args.limit)  # warm caches
    alone = run_stage(folder, args.steps, args.limit)
    results = {"alone": alone}
    cores = len(os.sched_getaffinity(0))
    for label, extra in (
        ("beside one competitor", {}),
        ("beside one competitor, every core", {"LUNE_THREADS": str(cores)}),
    ):
        spin = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env())
        try:
            time.sleep(2)  # the competitor at full speed before the stage sizes its threads
            results[label] = run_stage(folder, args.steps, args.limit, **extra)
        finally:
            spin.kill()
            spin.wait()
    for value in results.values():
        value["slowdown"] = round(value["seconds"] / alone["seconds"], 2) if value.get("seconds") else None
    return results


def pair(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    prepare_model(folder)
    run_stage(folder, 2, args.limit)  # warm caches
    results = {
        "1 thread alone": run_stage(folder, args.steps, args.limit, LUNE_THREADS="1"),
        "2 threads alone": run_stage(folder, args.steps, args.limit, LUNE_THREADS="2"),
    }
    started = time.perf_counter()
    both = [
        subprocess.Popen(
            [sys.executable, "-c", STAGE, str(folder), str(args.steps)],
            stdout=subprocess.PIPE,
            text=True,
            env=env(LUNE_THREADS="1"),
        )
        for _ in range(2)
    ]
    outs = [json.loads(proc.communicate(timeout=args.limit)[0].strip().splitlines()[-1]) for proc in both]
    wall = time.perf_counter() - started
    for i, out in enumerate(outs):
        results[f"pair, process {i + 1} (1 thread)"] = out
    results["pair, both"] = {"seconds": wall, "threads": 2}
    for label, value in results.items():
        steps = args.steps * (2 if label == "pair, both" else 1)
        value["steps_per_s"] = round(steps / value["seconds"], 2)
    return results


def sweep_file(folder: Path, points: int, runner: dict[str, Any]) -> Path:
    import yaml

    sys.path.insert(0, str(REPO / "tests"))
    from test_sweep import tiny_sample  # the tests' TOFU slice: 10 forget, 20 retain, 10 utility facts

    data = folder / "tofu"
    if not data.exists():
        tiny_sample(data)
    config = {
        "workdir": str(folder / "work"),
        "ingest": {"sources": [{"format": "tofu", "path": str(data), "forget": "forget01"}]},
        "generate": {"n": 1, "include_dataset": False},
        "teach": {"epochs": 4, "min_steps": 40, "check_recall": False, "retain_model": False},
        "unlearn": {"max_steps": 20, "eval_every": 10, "monitor_forget": 8, "monitor_retain": 8},
        "evaluate": {"max_per_set": 10, "plots": False, "mia": False},
        "sweep": {"axes": [{"key": "unlearn.lora.rank", "values": [2**i for i in range(points)]}], **runner},
    }
    running = "-running" if runner.get("dask_address") else ""
    path = folder / f"sweep-{runner.get('task_runner')}-{runner.get('workers')}{running}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def warm_cluster(workers: int) -> Any:
    """A local Dask cluster of ``workers`` single-threaded processes, started and warmed (lune, torch,
    transformers and peft imported) before any timing: a cluster a user keeps running between sweeps."""
    from distributed import Client

    from lune.flows.task_runners import local_cluster, worker_environment

    cluster = local_cluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, env=worker_environment()
    )
    with Client(cluster) as client:
        client.run(lambda: __import__("lune.flows.sweep") and __import__("peft") and __import__("transformers"))
    return cluster


def timed_sweep(folder: Path, path: Path) -> dict[str, Any]:
    from lune.flows.sweep import sweep_flow

    db = folder / f"{path.stem}-{time.time_ns()}.duckdb"  # a fresh results store: every point runs
    started = time.perf_counter()
    summary = sweep_flow(str(db), str(path), report=False)
    seconds = time.perf_counter() - started
    began = time.time() - seconds
    measured = summary["points"]
    return {
        "seconds": round(seconds, 1),
        "points": len(measured),
        "threads": sorted({p.get("threads") for p in measured}),
        # where the time went: until the first point began (a cluster's start), and in the points
        "first_point_after_s": round(min(p["started_at"] for p in measured) - began, 1),
        "point_seconds": [round(p["point_seconds"], 1) for p in measured],
    }


def workers(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.pop("OMP_NUM_THREADS", None)
    os.environ.pop("LUNE_THREADS", None)
    from lune.flows.sweep import prepare_data
    from lune.flows.sweep_config import load_sweep

    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    one = sweep_file(folder, args.points, {"task_runner": "threads", "workers": 1})
    two = sweep_file(folder, args.points, {"task_runner": "dask", "workers": 2})
    _, points = load_sweep(one)
    prepare_data(points[0].config)  # the shared stages, outside the timing
    results = {"1 worker": timed_sweep(folder, one), "2 Dask workers": timed_sweep(folder, two)}
    # The same on a cluster already running (started and warmed outside the timing): what a local
    # cluster's start-up costs, against what two workers cost per point.
    cluster = warm_cluster(2)
    try:
        running = sweep_file(
            folder, args.points, {"task_runner": "dask", "workers": 2, "dask_address": cluster.scheduler_address}
        )
        results["2 Dask workers, cluster running"] = timed_sweep(folder, running)
    finally:
        cluster.close()
    for label in ("2 Dask workers", "2 Dask workers, cluster running"):
        results[label]["speedup"] = round(results["1 worker"]["seconds"] / results[label]["seconds"], 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["competitor", "workers", "pair", "all"])
    parser.add_argument("--steps", type=int, default=60, help="competitor: optimiser steps of the stage")
    parser.add_argument("--limit", type=float, default=1800, help="competitor: seconds before a stage is stopped")
    parser.add_argument("--points", type=int, default=4, help="workers: grid points (LoRA ranks 1, 2, 4, ...)")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "lune-bench-threads"))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    out: dict[str, Any] = {"cores": len(os.sched_getaffinity(0))}
    if args.what in ("competitor", "all"):
        out["competitor"] = competitor(args)
    if args.what in ("workers", "all"):
        out["workers"] = workers(args)
    if args.what in ("pair", "all"):
        out["pair"] = pair(args)
    print("| case | seconds | threads | ratio or steps/s |\n|---|---|---|---|")
    for section in ("competitor", "workers", "pair"):
        for label, row in out.get(section, {}).items():
            ratio = row.get("slowdown", row.get("speedup", row.get("steps_per_s", "")))
            seconds = f"{row['seconds']:.1f}" if row.get("seconds") else f"stopped at {row.get('stopped_after')}"
            print(f"| {section}: {label} | {seconds} | {row.get('threads')} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
