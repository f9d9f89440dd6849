"""`lune run`: the whole pipeline (ingest, generate, score, curate, teach, unlearn, evaluate,
report) on a config, or on the embedded default (the shipped TOFU sample and a tiny model)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "run the whole pipeline on a config (default: the embedded TOFU sample) and print the results"
EXAMPLE = "lune run                      # embedded default;  lune run my.yaml --compare lune,grad_ascent,npo,idk"
METHODS = ("lune", "grad_ascent", "grad_diff", "npo", "idk", "full_ft")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="pipeline config (YAML); default: the embedded lune/default.yaml")
    parser.add_argument("--compare", metavar="M1,M2", help=f"unlearning methods to run and compare ({', '.join(METHODS)})")
    parser.add_argument("--workdir", help="override the config's workdir (models, adapters, report)")
    parser.add_argument("--fresh", action="store_true",
                        help="start a new pipeline run instead of resuming the one with the same config")


def run(args: argparse.Namespace) -> int:
    import uuid

    from lune.data.errors import LuneError
    from lune.flows.pipeline import pipeline, pipeline_run_id
    from lune.flows.config import load_config
    from lune.results import results_table, write_results

    config = load_config(args.config)
    if args.workdir:
        config.workdir = args.workdir
    methods = None
    if args.compare:
        methods = [m.strip() for m in args.compare.split(",") if m.strip()]
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise LuneError(f"--compare: unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    run_id = pipeline_run_id(config, args.db)
    if args.fresh:
        run_id = f"{run_id[:8]}{uuid.uuid4().hex[:8]}"
    print(f"lune run: pipeline run {run_id} on {args.db} (workdir {config.workdir})", file=sys.stderr)
    summary: dict[str, Any] = pipeline(args.db, config, methods=methods, run_id=run_id)
    results_path = write_results(summary)
    print()
    print(results_table(summary))
    report = summary["evaluation"]["report_files"].get("report_md")
    print(f"\nreport:  {Path(report).resolve() if report else summary['evaluation']['out_dir']}")
    print(f"results: {results_path.resolve()}")
    print(f"store:   {Path(args.db).resolve()}  (try: lune sql \"SELECT * FROM v_leaks LIMIT 10\" --db {args.db})")
    return 0
