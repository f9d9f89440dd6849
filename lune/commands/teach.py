"""`lune teach`: teach a model the store's facts (and train the retain model), cached by content."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "teach a model the facts before unlearning them (TOFU protocol), and train the retain model"
EXAMPLE = "lune teach --workdir runs/default\n  lune teach --base-model models/my-llama --epochs 5 --workdir runs/real"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lune.cli_options import add_model_options
    from lune.unlearn.config import TeachConfig

    parser.add_argument(
        "--workdir",
        default="runs/default",
        metavar="DIR",
        help="models go to DIR/models/teach-<hash>/ (default: runs/default)",
    )
    parser.add_argument("--corpus", help="teach only the facts of this corpus (default: all)")
    parser.add_argument(
        "--config",
        metavar="YAML",
        help="pipeline config whose `teach:` section to start from "
        "(default: the defaults below); the options below override it",
    )
    parser.add_argument("--run-id", help="id of the runs row to write (default: a fresh one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    settings = parser.add_argument_group("teach settings (the config's `teach:` section)")
    add_model_options(settings, TeachConfig, exclude=("enabled",))  # `lune teach` always teaches
    settings.add_argument(
        "--lr", dest="learning_rate", type=float, metavar="X", default=argparse.SUPPRESS, help="same as --learning-rate"
    )


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The `teach:` section to validate: the config's (or the defaults), the options laid over it."""
    from lune.cli_options import merge_overrides, overrides_from_args
    from lune.flows.config import load_config
    from lune.unlearn.config import TeachConfig

    base = load_config(args.config).teach.model_dump() if args.config else {}
    return merge_overrides(base, overrides_from_args(args, TeachConfig))


def run(args: argparse.Namespace) -> int:
    from lune.core.config_base import validate_config
    from lune.flows.teach import teach_flow
    from lune.unlearn.config import TeachConfig

    config = validate_config(TeachConfig, settings_from_args(args), "lune teach")
    result = teach_flow(
        args.db, args.workdir, config, corpus=args.corpus, run_id=args.run_id, progress=not args.no_progress
    )
    metrics = result["metrics"]
    state = "cached, not retrained" if result["cached"] else f"{metrics.get('wall_s', 0):.0f} s"
    print(f"taught model: {result['model_dir']}  (key-span recall {metrics['taught'].get('recall', 'n/a')}; {state})")
    if result["retain_model_dir"]:
        print(
            f"retain model: {result['retain_model_dir']}  "
            f"(recall {metrics['retain'].get('recall', 'n/a')}, "
            f"on the untaught forget facts {metrics['retain'].get('untaught_forget_recall', 'n/a')})"
        )
    print(f"run {result['run_id']}")
    return 0
