"""`lune curate`: apply the curation policy and save a named, versioned curated set."""

from __future__ import annotations

import argparse

HELP = "select negatives, train prompts and held-out eval prompts into a named, versioned curated set"
EXAMPLE = "lune curate --name tofu-forget10\n  lune curate --name strict --config strict.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lune.cli_options import add_model_options
    from lune.generators.config import CurateConfig

    parser.add_argument(
        "--config",
        help="pipeline config file whose `curate` and `score` sections apply "
        "(default: the embedded one); the options below override `curate`",
    )
    add_model_options(parser, CurateConfig)


def run(args: argparse.Namespace) -> int:
    from lune.cli_options import apply_options
    from lune.data.store import Store
    from lune.flows.config import load_config
    from lune.generators.config import CurateConfig
    from lune.generators.curation import curate_stage

    config = load_config(args.config)
    curate = apply_options(args, CurateConfig, config.curate, source=args.config or "lune curate options")
    with Store.open(args.db) as store:
        result = curate_stage(store, curate, config.score)
    counts = result.counts
    state = "saved" if result.created else "unchanged: same items as the latest version, reused"
    print(f"curated set {result.name} version {result.version} ({result.set_id}): {state}")
    print("  kept:    " + (", ".join(f"{k} {v}" for k, v in counts.get("kept", {}).items()) or "nothing"))
    print("  dropped: " + (", ".join(f"{k} {v}" for k, v in counts.get("dropped", {}).items()) or "nothing"))
    print(f"  contradiction: {counts.get('contradiction')}")
    below = result.below_minimum
    if below:
        print(
            f"  {len(below)} of {counts.get('facts')} fact(s) have fewer than {curate.min_per_fact} kept "
            "negative(s) or refusal(s) (kept in the set's forget split, listed in curated_sets.counts):"
        )
        for fact in below[:20]:
            print(
                f"    {fact['fact_id']}  kept {fact['kept_targets']} of {fact['target_candidates']}"
                f"  ({fact.get('top_drop_reason') or 'no candidates'})  {fact['question'][:70]}"
            )
        if len(below) > 20:
            print(f"    ... {len(below) - 20} more")
    print(f"export it with: lune export --name {result.name} --out runs/exports/{result.name}")
    return 0
