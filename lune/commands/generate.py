"""`lune generate`: candidate negatives, paraphrases, attacks and refusals for the chosen facts."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "generate candidate negatives, paraphrases and attacks for facts (rules, dataset, transformers, vllm, openai)"
EXAMPLE = ("lune generate --backend rules --split forget --kinds negative,paraphrase,attack --n 8\n"
           "  lune generate --backend vllm --model runs/default/model --where \"corpus = 'tofu'\" --n 16\n"
           "  lune generate --backend openai --base-url http://gpu1:8000 --base-url http://gpu2:8000 --model MODEL")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="pipeline config file whose `generate:` section to use "
                        "(default: the embedded default); the options below override it")
    parser.add_argument("--backend", choices=["rules", "dataset", "transformers", "vllm", "openai"],
                        help="generator backend (default: rules)")
    parser.add_argument("--split", help="facts of this split (forget / retain / holdout / utility; `all` for every "
                        "split; default: forget)")
    parser.add_argument("--where", help="extra SQL condition on table facts, e.g. \"corpus = 'rwku'\"")
    parser.add_argument("--kinds", type=_csv, help="comma-separated kinds: negative,paraphrase,attack,refusal")
    parser.add_argument("--attack-types", type=_csv, help="comma-separated RWKU attack families (default: all)")
    parser.add_argument("--n", type=int, help="candidates per fact and strategy (default: 4)")
    parser.add_argument("--batch-size", type=int, help="facts per batch, the unit of resumption (default: 256)")
    parser.add_argument("--model", help="model folder (transformers, vllm) or served model name (openai)")
    parser.add_argument("--adapter", help="LoRA adapter folder applied while generating (transformers, vllm)")
    parser.add_argument("--base-url", action="append", dest="base_urls",
                        help="OpenAI-compatible server URL (repeat for several servers)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (default: 0.9)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling mass (default: 0.95)")
    parser.add_argument("--max-tokens", type=int, help="longest generated candidate in tokens (default: 96)")
    parser.add_argument("--seed", type=int, help="base seed (default: 0)")
    parser.add_argument("--no-dataset", action="store_true", help="do not add the dataset's own negatives, "
                        "paraphrases and attacks as candidates")
    parser.add_argument("--plain", action="store_true", help="ask models for plain text instead of JSON-schema output")
    parser.add_argument("--task-runner", choices=["threads", "dask"], help="Prefect task runner (default: threads)")
    parser.add_argument("--workers", type=int, help="threads or Dask worker processes (default: 2)")
    parser.add_argument("--run-id", help="id for the runs row (default: a fresh one)")


def resolve(args: argparse.Namespace) -> Any:
    """The GenerateConfig of the config file (or the embedded default) with the options applied."""
    from lune.generators.config import GenerateConfig
    from lune.flows.config import load_config
    from lune.core.config_base import validate_config

    base = load_config(args.config).generate.model_dump()
    overrides: dict[str, Any] = {}
    for name in ("backend", "where", "kinds", "attack_types", "n", "batch_size", "model", "adapter", "temperature",
                 "top_p", "max_tokens", "seed", "task_runner", "workers"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if args.split is not None:
        overrides["split"] = None if args.split == "all" else args.split
    if args.no_dataset:
        overrides["include_dataset"] = False
    if args.plain:
        overrides["structured"] = False
    if args.base_urls:
        base["openai"]["base_urls"] = args.base_urls
    return validate_config(GenerateConfig, {**base, **overrides}, args.config or "lune generate options")


def preflight(db: str, config: Any) -> int:
    """Check what can be checked before Prefect starts (15-30 s): the filter, the model paths."""
    from pathlib import Path

    from lune.data import generation_queries
    from lune.data.errors import LuneError
    from lune.data.store import Store

    for label, path in (("--model", config.model if config.backend in ("transformers", "vllm") else None),
                        ("--adapter", config.adapter)):
        if path and not Path(path).exists():
            raise LuneError(f"{label} {path}: no such folder")
    with Store.open(db) as store:
        return generation_queries.count_facts(store, split=config.split, where=config.where)


def run(args: argparse.Namespace) -> int:
    config = resolve(args)
    if preflight(args.db, config) == 0:
        where = f" matching {config.where!r}" if config.where else ""
        print(f"generate: no facts{f' of split {config.split}' if config.split else ''}{where} in {args.db}; "
              "nothing to do (ingest facts first: lune ingest ...)")
        return 0
    from lune.flows.generate import build_negatives

    summary = build_negatives(args.db, config, run_id=args.run_id)
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(summary["by_kind"].items())) or "none"
    rate = summary["candidates_per_s"]
    print(f"generate ({summary['backend']}): {summary['facts']:,} facts in {summary['batches']} batches "
          f"({summary['skipped_batches']} already complete); {summary['new_candidates']:,} new candidates "
          f"({kinds}); {summary['rejected']:,} rejections; {summary['seconds']:.1f} s"
          f"{f' ({rate:,.0f} candidates/s)' if rate else ''}; run {summary['run_id']}")
    if summary["rejected"]:
        print("  why: lune sql \"SELECT * FROM v_generation_rejections\"")
    return 0
