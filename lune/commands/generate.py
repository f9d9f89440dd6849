"""`lune generate`: candidate negatives, paraphrases, attacks and refusals for the chosen facts."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "generate candidate negatives, paraphrases and attacks for facts (rules, dataset, transformers, vllm, openai)"
EXAMPLE = (
    "lune generate --backend rules --split forget --kinds negative,paraphrase,attack --n 8\n"
    "  lune generate --backend vllm --model runs/default/model --where \"corpus = 'tofu'\" --n 16\n"
    "  lune generate --backend openai --base-url http://gpu1:8000 --base-url http://gpu2:8000 --model MODEL"
)


def _split(value: str) -> str | None:
    return None if value == "all" else value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lune.cli_options import add_model_options
    from lune.generators.config import GenerateConfig

    parser.add_argument(
        "--config",
        help="pipeline config file whose `generate:` section to use "
        "(default: the embedded default); the options below override it",
    )
    parser.add_argument("--run-id", help="id for the runs row (default: a fresh one)")
    split = GenerateConfig.model_fields["split"]
    parser.add_argument(
        "--split",
        type=_split,
        default=argparse.SUPPRESS,
        help=f"{split.description}; `all` for every split (default: {split.default})",
    )
    add_model_options(parser, GenerateConfig, exclude=("split",))
    # Earlier spellings, kept working.
    parser.add_argument(
        "--no-dataset",
        dest="include_dataset",
        action="store_false",
        default=argparse.SUPPRESS,
        help="same as --no-include-dataset",
    )
    parser.add_argument(
        "--plain",
        dest="structured",
        action="store_false",
        default=argparse.SUPPRESS,
        help="same as --no-structured: ask models for plain text instead of JSON-schema output",
    )
    parser.add_argument(
        "--base-url",
        dest="openai_base_urls",
        action="append",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="same as --openai-base-urls (repeat for several servers)",
    )


def resolve(args: argparse.Namespace) -> Any:
    """The GenerateConfig of the config file (or the embedded default) with the options applied."""
    from lune.cli_options import apply_options
    from lune.flows.config import load_config
    from lune.generators.config import GenerateConfig

    return apply_options(
        args, GenerateConfig, load_config(args.config).generate, source=args.config or "lune generate options"
    )


def preflight(db: str, config: Any) -> int:
    """Check what can be checked before Prefect starts (15-30 s): the filter, the model paths."""
    from pathlib import Path

    from lune.core.model_refs import locate_model
    from lune.data import generation_queries
    from lune.data.errors import LuneError
    from lune.data.store import Store

    if config.backend in ("transformers", "vllm"):
        locate_model(config.model, "--model")  # a folder, a GGUF file or a known name (converted when loaded)
    if config.adapter and not Path(config.adapter).exists():
        raise LuneError(f"--adapter {config.adapter}: no such folder")
    with Store.open(db) as store:
        return generation_queries.count_facts(store, split=config.split, where=config.where)


def run(args: argparse.Namespace) -> int:
    config = resolve(args)
    if preflight(args.db, config) == 0:
        where = f" matching {config.where!r}" if config.where else ""
        print(
            f"generate: no facts{f' of split {config.split}' if config.split else ''}{where} in {args.db}; "
            "nothing to do (ingest facts first: lune ingest ...)"
        )
        return 0
    from lune.flows.generate import build_negatives

    summary = build_negatives(args.db, config, run_id=args.run_id)
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(summary["by_kind"].items())) or "none"
    rate = summary["candidates_per_s"]
    print(
        f"generate ({summary['backend']}): {summary['facts']:,} facts in {summary['batches']} batches "
        f"({summary['skipped_batches']} already complete); {summary['new_candidates']:,} new candidates "
        f"({kinds}); {summary['rejected']:,} rejections; {summary['seconds']:.1f} s"
        f"{f' ({rate:,.0f} candidates/s)' if rate else ''}; run {summary['run_id']}"
    )
    if summary["rejected"]:
        print('  why: lune sql "SELECT * FROM v_generation_rejections"')
    return 0
