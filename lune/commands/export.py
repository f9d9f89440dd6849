"""`lune export`: write a curated set as a Hugging Face DatasetDict, Parquet and a dataset card."""

from __future__ import annotations

import argparse

HELP = "export a curated set (Hugging Face datasets on disk, Parquet per split, dataset card)"
EXAMPLE = "lune export --name tofu-forget10 --out runs/exports/tofu-forget10"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="curated set name (or set id)")
    parser.add_argument("--version", type=int, help="set version (default: the latest)")
    parser.add_argument("--out", help="output folder (default: runs/exports/NAME-vVERSION)")


def run(args: argparse.Namespace) -> int:
    import datasets

    from lune.data.export import export_set, resolve_set, set_info
    from lune.data.store import Store

    datasets.disable_progress_bars()

    with Store.open(args.db) as store:
        info = set_info(store, resolve_set(store, args.name, args.version))
        out = args.out or f"runs/exports/{info['name']}-v{info['version']}"
        result = export_set(store, info["set_id"], out)
    rows = ", ".join(f"{split} {n}" for split, n in result["rows"].items())
    print(f"exported {result['name']} version {result['version']} ({rows})")
    print(f"  {out}/hf        datasets.load_from_disk")
    print(f"  {out}/parquet   one Parquet file per split")
    print(f"  {out}/README.md dataset card")
    return 0
