"""`lune unlearn`: LUNE (LoRA on curated negatives) or a baseline on a curated set; writes a PEFT
adapter (or a model, for full_ft) and its manifest."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "make a model forget a curated set: LUNE (LoRA on negatives) or a baseline; writes an adapter + manifest"
EXAMPLE = ("lune unlearn --set tofu-forget01 --model runs/default/models/teach-XXXX/taught --retain-anchor kl\n"
           "  lune unlearn --method npo --dataset runs/exports/tofu-forget01 --model DIR --out runs/npo")

# option -> UnlearnConfig field (options whose value is copied as is)
FIELDS = {"method": "method", "retain_anchor": "retain_anchor", "retain_weight": "retain_weight",
          "learning_rate": "learning_rate", "max_steps": "max_steps", "batch_size": "batch_size",
          "eval_every": "eval_every", "usr_target": "usr_target", "gur_tolerance": "gur_tolerance",
          "npo_beta": "npo_beta", "seed": "seed", "device": "device", "dtype": "dtype"}
LORA_FIELDS = {"lora_rank": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lune.unlearn.config import METHOD_NAMES

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--set", dest="set_name", metavar="NAME", help="curated set in the store (name or id)")
    source.add_argument("--dataset", metavar="DIR", help="curated set exported by `lune export` (a DatasetDict folder)")
    parser.add_argument("--version", type=int, help="version of --set (default: the latest)")
    parser.add_argument("--model", required=True, metavar="DIR", help="causal LM to unlearn from (e.g. from `lune teach`)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: runs/unlearn/METHOD)")
    parser.add_argument("--method", choices=METHOD_NAMES, help="lune (default) or a baseline")
    parser.add_argument("--retain-anchor", choices=["none", "nll", "kl"],
                        help="keep retain facts: NLL on them, or KL to the frozen model (default: none)")
    parser.add_argument("--retain-weight", type=float, metavar="W", help="weight of the retain anchor (default 1.0)")
    parser.add_argument("--lr", dest="learning_rate", type=float, help="learning rate (default 1e-3)")
    parser.add_argument("--max-steps", type=int, help="step limit (default 300)")
    parser.add_argument("--batch-size", type=int, help="rows per step (default 16)")
    parser.add_argument("--eval-every", type=int, metavar="K", help="early-stopping check every K steps (default 10)")
    parser.add_argument("--usr-target", type=float, help="stop once USR reaches this (default 0.9)")
    parser.add_argument("--gur-tolerance", type=float,
                        help="largest allowed GUR drop below 1 (default 0.05; the paper's is 0.005)")
    parser.add_argument("--lora-rank", type=int, help="LoRA rank (default 16)")
    parser.add_argument("--lora-alpha", type=float, help="LoRA alpha (default 32)")
    parser.add_argument("--lora-dropout", type=float, help="LoRA dropout (default 0.05)")
    parser.add_argument("--target-modules", metavar="NAMES",
                        help="comma-separated modules to adapt (default: all-linear = every attention and MLP projection)")
    parser.add_argument("--npo-beta", type=float, help="NPO beta (default 0.1)")
    parser.add_argument("--seed", type=int, help="seed (default 0)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (less memory)")
    parser.add_argument("--merge", action="store_true", help="also write the model with the adapter merged in (OUT/merged)")
    parser.add_argument("--trust-remote-code", action="store_true", help="let transformers run the model's own code")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weights dtype")
    parser.add_argument("--config", metavar="YAML", help="pipeline config whose `unlearn:` section to start from")
    parser.add_argument("--run-id", help="id of the runs row to write (default: a fresh one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from lune.flows.config import load_config

    settings: dict[str, Any] = load_config(args.config).unlearn.model_dump() if args.config else {}
    for option, name in FIELDS.items():
        if getattr(args, option) is not None:
            settings[name] = getattr(args, option)
    lora = dict(settings.get("lora", {}))
    for option, name in LORA_FIELDS.items():
        if getattr(args, option) is not None:
            lora[name] = getattr(args, option)
    if args.target_modules:
        modules = [m.strip() for m in args.target_modules.split(",") if m.strip()]
        lora["target_modules"] = "all-linear" if modules == ["all-linear"] else modules
    if lora:
        settings["lora"] = lora
    for flag in ("gradient_checkpointing", "merge", "trust_remote_code"):
        if getattr(args, flag):
            settings[flag] = True
    return settings


def check_paths(args: argparse.Namespace) -> None:
    """Fail on a missing folder before the flow starts (a Prefect start costs 15-30 s)."""
    import re
    from pathlib import Path

    from lune.data.errors import LuneError
    from lune.unlearn.inputs import dataset_dir

    if args.dataset:
        dataset_dir(Path(args.dataset))
    model = Path(args.model)
    hub_id = not model.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", args.model) and not args.model.startswith(".")
    if not hub_id and not (model / "config.json").exists():
        raise LuneError(f"--model {model}: no config.json there; pass a model directory (e.g. from `lune teach`)")


def run(args: argparse.Namespace) -> int:
    from lune.flows.unlearn import unlearn_flow
    from lune.core.config_base import validate_config
    from lune.unlearn.config import UnlearnConfig

    config = validate_config(UnlearnConfig, settings_from_args(args), "lune unlearn")
    check_paths(args)
    out = args.out or f"runs/unlearn/{config.method}"
    result = unlearn_flow(args.db, args.model, out, set_name=args.set_name, version=args.version,
                          dataset=args.dataset, config=config, run_id=args.run_id, progress=not args.no_progress)
    m = result["metrics"]
    kept = f"step {m['kept_step']}: USR {m['kept_usr']:.2f}, GUR {m['kept_gur']:.2f}"
    what = f"adapter: {result['adapter_dir']}" if result["adapter_dir"] else f"model: {result['out_dir']}"
    print(f"{result['method']}: stopped ({m['stop_reason']}), kept {kept}; "
          f"{m['trainable_params']:,} of {m['total_params']:,} parameters trained, "
          f"{m['steps']} steps in {m['train_s']:.1f} s, peak RSS {m['peak_rss_mib']:.0f} MiB")
    print(what)
    if result["merged_dir"]:
        print(f"merged model: {result['merged_dir']}")
    print(f"manifest: {result['manifest']}\nrun {result['run_id']}")
    return 0
