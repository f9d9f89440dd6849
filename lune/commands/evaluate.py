"""`lune evaluate`: ask the base model and the unlearned one(s) the same probes; store USR, GUR,
APR, MIA and TOFU metrics and write a report (Markdown, JSON, PNG plots)."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "measure what a model forgot and kept (USR, GUR, APR, MIA, TOFU) before and after unlearning; write a report"
EXAMPLE = (
    "lune evaluate --model runs/default/taught --adapter runs/default/lune --retain-model runs/default/retain "
    "--out runs/default/eval"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lune.cli_options import add_model_options
    from lune.evaluation.config import EvaluateConfig

    parser.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="the base model: a folder (e.g. taught by `lune teach`), a GGUF file or a known name (docs/models.md)",
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="[LABEL=]DIR",
        help="PEFT adapter (or full model) directory of an unlearned model; repeat to compare several "
        "methods in one report, each as LABEL=DIR",
    )
    parser.add_argument(
        "--label", default="unlearned", help="label of an --adapter given without LABEL= (default: unlearned)"
    )
    parser.add_argument(
        "--config",
        metavar="YAML",
        help="pipeline config whose `evaluate:` section to use; the options below override it",
    )
    parser.add_argument("--out", default="runs/evaluate", metavar="DIR", help="report folder (default: runs/evaluate)")
    parser.add_argument("--run-id", help="id of the runs row to write (default: a fresh one)")
    add_model_options(parser, EvaluateConfig)


def parse_adapters(values: list[str], default_label: str) -> dict[str, str]:
    """``[LABEL=]DIR`` values -> {label: dir}; an unlabelled one takes ``default_label``."""
    from lune.data.errors import LuneError

    adapters: dict[str, str] = {}
    for value in values:
        label, sep, path = value.partition("=")
        if not sep:
            label, path = default_label, value
        if not label or not path:
            raise LuneError(f"--adapter {value!r}: expected DIR or LABEL=DIR")
        if label in adapters:
            raise LuneError(f"--adapter: label {label!r} given twice; name each adapter with LABEL=DIR")
        adapters[label] = path
    return adapters


def print_headline(headline: dict[str, dict[str, Any]]) -> None:
    from lune.commands.sql import format_table
    from lune.evaluation.report import HEADLINE_COLUMNS, fmt

    keys = [c for c in HEADLINE_COLUMNS if any(c[0] in v for v in headline.values())]
    print(
        format_table(
            ["model", *[c[1] for c in keys]],
            [(label, *[fmt(values.get(c[0])) for c in keys]) for label, values in headline.items()],
        )
    )


def run(args: argparse.Namespace) -> int:
    from lune.cli_options import apply_options
    from lune.evaluation.config import EvaluateConfig
    from lune.flows.config import load_config
    from lune.flows.evaluate import evaluate_flow

    base = load_config(args.config).evaluate if args.config else None
    config = apply_options(args, EvaluateConfig, base, source=args.config or "lune evaluate options")
    outcome = evaluate_flow(
        db=args.db,
        model=args.model,
        adapters=parse_adapters(args.adapter, args.label),
        retain_model=config.retain_model,
        set_name=config.set,
        out_dir=args.out,
        run_id=args.run_id,
        config=config.model_dump(),
    )
    print_headline(outcome.headline)
    for note in outcome.notes:
        print(f"note: {note}")
    leaks = f"lune sql \"SELECT * FROM v_leaks WHERE run_id = '{outcome.run_id}'\""
    print(
        f"run {outcome.run_id}: report in {outcome.out_dir / 'report.md'} "
        f"(rows in eval_results / eval_items; leaks: {leaks})"
    )
    return 0
