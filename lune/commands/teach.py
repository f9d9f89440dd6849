"""`lune teach`: teach a model the store's facts (and train the retain model), cached by content."""

from __future__ import annotations

import argparse

HELP = "teach a model the facts before unlearning them (TOFU protocol), and train the retain model"
EXAMPLE = ("lune teach --workdir runs/default\n"
           "  lune teach --base-model models/my-llama --epochs 5 --workdir runs/real")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="runs/default", metavar="DIR",
                        help="models go to DIR/models/teach-<hash>/ (default: runs/default)")
    parser.add_argument("--base-model", metavar="DIR",
                        help="Hugging Face causal LM to teach (default: build the tiny Llama offline)")
    parser.add_argument("--corpus", help="teach only the facts of this corpus (default: all)")
    parser.add_argument("--epochs", type=int, help="passes over the facts (default 18)")
    parser.add_argument("--min-steps", type=int, help="at least this many steps per model (default 300)")
    parser.add_argument("--lr", type=float, dest="learning_rate", help="learning rate (default 1e-3)")
    parser.add_argument("--batch-size", type=int, help="facts per step (default 16)")
    parser.add_argument("--no-retain-model", action="store_true", help="skip the retain model")
    parser.add_argument("--trust-remote-code", action="store_true", help="let transformers run the model's own code")
    parser.add_argument("--config", metavar="YAML", help="pipeline config whose `teach:` section to start from")
    parser.add_argument("--run-id", help="id of the runs row to write (default: a fresh one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def settings_from_args(args: argparse.Namespace) -> dict:
    from lune.flows.config import load_config

    settings = load_config(args.config).teach.model_dump() if args.config else {}
    for name in ("base_model", "epochs", "min_steps", "learning_rate", "batch_size"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.no_retain_model:
        settings["retain_model"] = False
    if args.trust_remote_code:
        settings["trust_remote_code"] = True
    return settings


def run(args: argparse.Namespace) -> int:
    from lune.flows.teach import teach_flow
    from lune.core.config_base import validate_config
    from lune.unlearn.config import TeachConfig

    config = validate_config(TeachConfig, settings_from_args(args), "lune teach")
    result = teach_flow(args.db, args.workdir, config, corpus=args.corpus, run_id=args.run_id,
                        progress=not args.no_progress)
    metrics = result["metrics"]
    state = "cached, not retrained" if result["cached"] else f"{metrics.get('wall_s', 0):.0f} s"
    print(f"taught model: {result['model_dir']}  (key-span recall {metrics['taught'].get('recall', 'n/a')}; {state})")
    if result["retain_model_dir"]:
        print(f"retain model: {result['retain_model_dir']}  "
              f"(recall {metrics['retain'].get('recall', 'n/a')}, "
              f"on the untaught forget facts {metrics['retain'].get('untaught_forget_recall', 'n/a')})")
    print(f"run {result['run_id']}")
    return 0
