"""`lune unlearn`: LUNE (LoRA on curated negatives) or a baseline on a curated set; writes a PEFT
adapter (or a model, for full_ft) and its manifest."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "make a model forget a curated set: LUNE (LoRA on negatives) or a baseline; writes an adapter + manifest"
EXAMPLE = (
    "lune unlearn --set tofu-forget01 --model runs/default/models/teach-XXXX/taught --retain-anchor kl\n"
    "  lune unlearn --method npo --npo-beta 0.2 --dataset runs/exports/tofu-forget01 --model DIR --out runs/npo"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lune.cli_options import add_model_options
    from lune.unlearn.config import UnlearnConfig
    from lune.unlearn.methods import METHODS

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--set", dest="set_name", metavar="NAME", help="curated set in the store (name or id)")
    source.add_argument("--dataset", metavar="DIR", help="curated set exported by `lune export` (a DatasetDict folder)")
    parser.add_argument("--version", type=int, help="version of --set (default: the latest)")
    parser.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="causal LM to unlearn from: a folder (e.g. from `lune teach`), a GGUF file or a known name "
        "(docs/models.md)",
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (default: runs/unlearn/METHOD)")
    parser.add_argument(
        "--config",
        metavar="YAML",
        help="pipeline config whose `unlearn:` section to start from "
        "(default: the defaults below); the options below override it",
    )
    parser.add_argument("--run-id", help="id of the runs row to write (default: a fresh one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    settings = parser.add_argument_group("unlearn settings (the config's `unlearn:` section)")
    add_model_options(settings, UnlearnConfig, exclude=("method_options", "per_method"))
    settings.add_argument(
        "--lr", dest="learning_rate", type=float, metavar="X", default=argparse.SUPPRESS, help="same as --learning-rate"
    )
    for name, method in METHODS.items():
        if method.Options.model_fields:
            group = parser.add_argument_group(f"--method {name} settings (unlearn.method_options)")
            add_model_options(group, method.Options, prefix=name)


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The `unlearn:` section to validate: the config's (or the defaults), the options laid over it."""
    from lune.cli_options import merge_overrides, overrides_from_args
    from lune.data.errors import LuneError
    from lune.flows.config import load_config
    from lune.unlearn.config import UnlearnConfig
    from lune.unlearn.methods import DEFAULT_METHOD, METHODS

    base: dict[str, Any] = load_config(args.config).unlearn.model_dump() if args.config else {}
    settings = merge_overrides(base, overrides_from_args(args, UnlearnConfig))
    method = settings.get("method", DEFAULT_METHOD)
    if method != base.get("method", DEFAULT_METHOD):
        settings.pop("method_options", None)  # the config's options are another method's
    for name, cls in METHODS.items():
        options = overrides_from_args(args, cls.Options, prefix=name)
        if options and name != method:
            flags = ", ".join(f"--{name}-{key}".replace("_", "-") for key in options)
            raise LuneError(f"{flags}: a setting of method {name}, and the method is {method}")
        if options:
            settings["method_options"] = merge_overrides(settings.get("method_options", {}), options)
    return settings


def check_paths(args: argparse.Namespace) -> None:
    """Fail on a missing folder before the flow starts (a Prefect start costs 15-30 s)."""
    from pathlib import Path

    from lune.core.model_refs import locate_model
    from lune.data.errors import LuneError
    from lune.unlearn.inputs import dataset_dir

    if args.dataset:
        dataset_dir(Path(args.dataset))
    model = locate_model(args.model, "--model")  # a folder, a GGUF file (a known name's), or a Hub id
    if model.is_dir() and not (model / "config.json").exists():
        raise LuneError(f"--model {model}: no config.json there; pass a model directory (e.g. from `lune teach`)")


def run(args: argparse.Namespace) -> int:
    from lune.core.config_base import validate_config
    from lune.flows.unlearn import unlearn_flow
    from lune.unlearn.config import UnlearnConfig

    config = validate_config(UnlearnConfig, settings_from_args(args), "lune unlearn")
    check_paths(args)
    out = args.out or f"runs/unlearn/{config.method}"
    result = unlearn_flow(
        args.db,
        args.model,
        out,
        set_name=args.set_name,
        version=args.version,
        dataset=args.dataset,
        config=config,
        run_id=args.run_id,
        progress=not args.no_progress,
    )
    m = result["metrics"]
    kept = f"step {m['kept_step']}: USR {m['kept_usr']:.2f}, GUR {m['kept_gur']:.2f}"
    what = f"adapter: {result['adapter_dir']}" if result["adapter_dir"] else f"model: {result['out_dir']}"
    print(
        f"{result['method']}: stopped ({m['stop_reason']}), kept {kept}; "
        f"{m['trainable_params']:,} of {m['total_params']:,} parameters trained, "
        f"{m['steps']} steps in {m['train_s']:.1f} s, peak RSS {m['peak_rss_mib']:.0f} MiB"
    )
    print(what)
    if result["merged_dir"]:
        print(f"merged model: {result['merged_dir']}")
    print(f"manifest: {result['manifest']}\nrun {result['run_id']}")
    return 0
