"""Benchmark of the embedded default: ``lune run`` from empty, several times, per stage.

    python bench/demo.py                  # 3 fresh runs (about 3-5 minutes each on 2 idle cores)
    python bench/demo.py --runs 5 --out bench-demo   # summary.json / summary.md in bench-demo/
    python bench/demo.py --dry-run        # the machine, the commands it would run; runs nothing
    python bench/demo.py --short          # 1 run of a cut-down default (a few steps): checks the harness
    make bench-demo                       # the same as the first line

Each run starts from nothing: a new folder with its own store (``--db``), workdir (taught models,
adapters, reports), ``LUNE_CACHE`` (converted models) and ``TORCHINDUCTOR_CACHE_DIR``, and a new
pipeline run (``--fresh``). Models read from the Hugging Face cache (MiniLM for scoring) stay: they
are set-up, not part of the run. Runs go one after another, never side by side.

Per stage, the time ``lune run`` prints (``lune: [teach] done in 90.1 s``) and the wall time of the
whole command; min / median / max over the runs. Beside them what makes figures differ between
machines: the load average before and after each run, the CPU model and flags (native bfloat16:
``avx512_bf16`` / ``amx_bf16``), core count, torch's thread count and whether bfloat16 autocast is
on; and whether every run printed the same results table (same seed, same machine: it should).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "flows" / "default.yaml"
STAGE_LINE = re.compile(r"lune: \[(?P<stage>[^\]]+)\] done in (?P<seconds>[0-9.]+) s")
RESULTS_LINE = re.compile(r"^results:\s+(?P<path>\S+)", re.MULTILINE)
# CPU flags that decide how fast the model stages run: bfloat16 matrix products (autocast is on
# only with them), wide vectors, AMX tiles.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")
# --short: the embedded default cut down to a few steps (checks the harness, measures nothing)
SHORT = {
    "teach": {"epochs": 1, "min_steps": 4, "check_recall": False},
    "unlearn": {"max_steps": 4, "eval_every": 2},
}


def cpu_info() -> dict[str, Any]:
    """CPU model, cores, and which of :data:`FLAGS` the CPU has (from /proc/cpuinfo where there is one)."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "cores": cores, "flags": {f: f in flags for f in FLAGS}}


def torch_info() -> dict[str, Any]:
    """torch's version, intra-op thread count and whether lune autocasts training to bfloat16 here."""
    code = (
        "import json, torch; from lune.unlearn.precision import cpu_has_native_bf16; "
        "print(json.dumps({'torch': torch.__version__, 'threads': torch.get_num_threads(), "
        "'native_bf16': cpu_has_native_bf16()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def short_config(folder: Path) -> Path:
    """The embedded default with :data:`SHORT` applied, written to ``folder`` (paths made absolute)."""
    import yaml

    config = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    for source in config.get("ingest", {}).get("sources", []):
        if "path" in source:
            source["path"] = str((DEFAULT_CONFIG.parent / source["path"]).resolve())
    for section, values in SHORT.items():
        config.setdefault(section, {}).update(values)
    path = folder / "short.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def lune_command(folder: Path, config: Path | None) -> list[str]:
    lune = Path(sys.executable).with_name("lune")
    command = [str(lune)] if lune.exists() else [sys.executable, "-m", "lune.cli"]
    command += ["run", "--fresh", "--db", str(folder / "lune.duckdb"), "--workdir", str(folder / "runs")]
    return command + ([str(config)] if config else [])


def run_once(folder: Path, config: Path | None, log: Path) -> dict[str, Any]:
    """One ``lune run`` from empty in ``folder``; its stage times, wall time, load and results table."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    env = {
        **os.environ,
        "LUNE_CACHE": str(folder / "cache"),
        "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor"),
        "LUNE_DB": str(folder / "lune.duckdb"),
    }
    load_before = load_average()
    started = time.perf_counter()
    done = subprocess.run(
        lune_command(folder, config), cwd=folder, env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    output = done.stdout + done.stderr
    log.write_text(output, encoding="utf-8")
    stages = {m["stage"]: float(m["seconds"]) for m in STAGE_LINE.finditer(output)}
    # the results table without its wall-time row (which differs from run to run by nature)
    table = "\n".join(
        line for line in done.stdout.split("\nreport:")[0].strip().splitlines() if "wall time" not in line
    )
    results = RESULTS_LINE.search(done.stdout)
    return {
        "returncode": done.returncode,
        "wall_s": round(wall, 1),
        "stages_s": stages,
        "load_before": load_before,
        "load_after": load_average(),
        "table": table,
        "results": str(results["path"]) if results else None,
        "log": str(log),
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarise(runs: list[dict[str, Any]], machine: dict[str, Any], command: list[str]) -> dict[str, Any]:
    """min / median / max per stage and of the whole command over the runs that finished."""
    ok = [r for r in runs if r["returncode"] == 0]
    stages: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(s for r in ok for s in r["stages_s"]):
        values = [r["stages_s"][name] for r in ok if name in r["stages_s"]]
        stages[name] = spread(values)
    return {
        "machine": machine,
        "command": " ".join(command),
        "runs": len(runs),
        "finished": len(ok),
        "wall_s": spread([r["wall_s"] for r in ok]) if ok else None,
        "stages_s": stages,
        "same_table": len({r["table"] for r in ok}) <= 1,
        "per_run": runs,
    }


def markdown(summary: dict[str, Any]) -> str:
    machine = summary["machine"]
    cpu, torch_ = machine["cpu"], machine["torch"]
    flags = ", ".join(f for f, on in cpu["flags"].items() if on) or "none of " + ", ".join(FLAGS)
    lines = [
        f"`{summary['command']}`, {summary['finished']} of {summary['runs']} runs finished, from empty each time.",
        "",
        f"Machine: {cpu['model']}, {cpu['cores']} cores, flags {flags}; torch {torch_.get('torch')} with "
        f"{torch_.get('threads')} threads, bfloat16 autocast {'on' if torch_.get('native_bf16') else 'off'}; "
        f"{machine['python']}.",
        "",
        "| stage | min | median | max |",
        "|---|---|---|---|",
    ]
    rows = list(summary["stages_s"].items())
    if summary["wall_s"]:
        rows.append(("**whole `lune run`**", summary["wall_s"]))
    for name, s in rows:
        lines.append(f"| {name} | {s['min']:.1f} s | {s['median']:.1f} s | {s['max']:.1f} s |")
    lines += ["", "| run | wall | load average before | after |", "|---|---|---|---|"]
    for i, r in enumerate(summary["per_run"], start=1):
        status = "" if r["returncode"] == 0 else f" (failed, exit {r['returncode']}: {r['log']})"
        lines.append(f"| {i} | {r['wall_s']:.1f} s{status} | {r['load_before']} | {r['load_after']} |")
    same = "the same results table" if summary["same_table"] else "DIFFERENT results tables (see the logs)"
    lines += ["", f"Every finished run printed {same}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh runs, one after another (default 3)")
    parser.add_argument("--out", default="bench-demo", help="folder for summary.json, summary.md and run logs")
    parser.add_argument("--work", default=None, help="folder for the runs' stores and models (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders (default: removed)")
    parser.add_argument("--dry-run", action="store_true", help="print the machine and the commands; run nothing")
    parser.add_argument("--short", action="store_true", help="one run of a cut-down default (checks the harness)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lune-bench-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = 1 if args.short else args.runs
    config = short_config(work) if args.short else None
    machine = {
        "cpu": cpu_info(),
        "torch": torch_info(),
        "python": f"Python {platform.python_version()}",
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "LUNE_THREADS") if k in os.environ},
    }
    command = lune_command(work / "run-N", config)
    print(f"machine: {json.dumps(machine)}", file=sys.stderr)
    if args.dry_run:
        for i in range(1, runs + 1):
            print(" ".join(lune_command(work / f"run-{i}", config)))
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i in range(1, runs + 1):
        print(f"run {i}/{runs} (load average {load_average()}) ...", file=sys.stderr, flush=True)
        result = run_once(work / f"run-{i}", config, out / f"run-{i}.log")
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in result["stages_s"].items())
        print(f"  exit {result['returncode']}, {result['wall_s']:.1f} s: {stages}", file=sys.stderr, flush=True)
        results.append(result)
        if not args.keep:
            shutil.rmtree(work / f"run-{i}", ignore_errors=True)
    summary = summarise(results, machine, command)
    summary["short"] = args.short
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    text = markdown(summary)
    (out / "summary.md").write_text(text, encoding="utf-8")
    print(text)
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if summary["finished"] == runs else 1


if __name__ == "__main__":
    sys.exit(main())
