"""`lune run`: the whole pipeline (ingest, generate, score, curate, teach, unlearn, evaluate,
report) on a config, or on the embedded default (the shipped TOFU sample and a tiny model)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "run the whole pipeline on a config (default: the embedded TOFU sample) and print the results"
EXAMPLE = "lune run                      # embedded default;  lune run my.yaml --compare lune,grad_ascent,npo,idk"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pydantic import BaseModel

    from lune.cli_options import add_model_options
    from lune.flows.config import PipelineConfig
    from lune.unlearn.config import METHOD_NAMES

    parser.add_argument("config", nargs="?", help="pipeline config (YAML); default: the embedded flows/default.yaml")
    parser.add_argument(
        "--compare", metavar="M1,M2", help=f"unlearning methods to run and compare ({', '.join(METHOD_NAMES)})"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="start a new pipeline run instead of resuming the one with the same config"
    )
    parser.add_argument(
        "--attacks",
        nargs="?",
        const="all",
        metavar="A1,A2",
        help="run the evaluation's attacks (evaluate.attacks): the ones named, or all of them "
        "(quantization, logit_lens, relearning) with no value; default: the config's (none in the embedded default)",
    )
    # The config's own top-level settings (workdir, model) override it; its sections come from the file.
    sections = [
        name
        for name, field in PipelineConfig.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    ]
    add_model_options(parser, PipelineConfig, exclude=sections)


def run(args: argparse.Namespace) -> int:
    import uuid

    from lune.cli_options import overrides_from_args
    from lune.data.errors import LuneError
    from lune.flows.config import PipelineConfig, load_config
    from lune.flows.pipeline import pipeline, pipeline_run_id
    from lune.results import results_table, write_results
    from lune.unlearn.config import METHOD_NAMES

    config = load_config(args.config)
    for name, value in overrides_from_args(args, PipelineConfig).items():
        setattr(config, name, value)  # validated as parsed, and again on assignment
    if args.attacks:
        config.evaluate = attacks_on(config.evaluate, args.attacks)
    methods = None
    if args.compare:
        methods = [m.strip() for m in args.compare.split(",") if m.strip()]
        unknown = [m for m in methods if m not in METHOD_NAMES]
        if unknown:
            raise LuneError(f"--compare: unknown method(s) {unknown}; choose from {', '.join(METHOD_NAMES)}")
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
    print(f'store:   {Path(args.db).resolve()}  (try: lune sql "SELECT * FROM v_leaks LIMIT 10" --db {args.db})')
    return 0


def attacks_on(settings: Any, names: str) -> Any:
    """``settings`` (the evaluate section) with ``attacks`` set to ``names`` (comma-separated), or to
    every registered attack for ``all``; an unknown name is an error naming the known ones."""
    from lune.data.errors import LuneError
    from lune.evaluation.attacks.registry import registered

    known = list(registered())
    chosen = known if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise LuneError(f"--attacks: unknown attack(s) {', '.join(unknown)}; known: {', '.join(known)} (or none: all)")
    return settings.model_validate({**settings.model_dump(), "attacks": chosen})
