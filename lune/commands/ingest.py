"""`lune ingest`: read a benchmark (by reference, or its folder) or a user's file into the store's facts and probes."""

from __future__ import annotations

import argparse
from typing import Any

from lune.data.errors import LuneError

HELP = "read facts and probes (TOFU, RWKU, KnowUnDo, or your own JSONL / CSV / Parquet) into the store"
EXAMPLE = (
    "lune ingest tofu data/sample/tofu --forget forget01\n"
    "  lune ingest rwku:1_Stephen_King          # a benchmark shipped with lune, by reference\n"
    "  lune ingest tofu:forget10 --hub          # the same from the Hugging Face Hub (needs network)\n"
    "  lune ingest generic my_facts.csv --map question=prompt,answer=target --split forget --skip-invalid"
)
FORMATS = ("tofu", "rwku", "knowundo", "generic")
# Convenience names for the generic loader (it picks the reader from the file's extension).
ALIASES = {"jsonl": "generic", "json": "generic", "csv": "generic", "parquet": "generic"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="a benchmark reference (tofu:forget01|forget05|forget10, rwku:<target folder> or "
        "rwku:all, knowundo:privacy), or the input format followed by PATH: "
        f"{', '.join(FORMATS)}, or jsonl / json / csv / parquet (the generic loader)",
    )
    parser.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="with a format: file or folder to read (TOFU: the folder; RWKU: a target folder or the root)",
    )
    parser.add_argument(
        "--hub",
        action="store_true",
        help="with a benchmark reference: read the Hugging Face dataset instead of the shipped copy "
        "(needs network and HF_HUB_OFFLINE=0)",
    )
    parser.add_argument("--forget", help="TOFU: forget split, e.g. forget01 (retain is retain{100-NN})")
    parser.add_argument("--corpus", help="corpus name stored on each row (default: the format)")
    parser.add_argument("--split", help="generic: split of rows without a split column (default: forget)")
    parser.add_argument(
        "--map",
        dest="fields",
        metavar="FIELD=COLUMN,...",
        default="",
        help="generic: the file's column for each field (question, answer, subject, split, key_span, group_name)",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="store the good rows and record each bad one in the rejections table",
    )


def parse_mapping(text: str) -> dict[str, str]:
    """``question=prompt,answer=target`` -> ``{"question": "prompt", "answer": "target"}``."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        field, sep, column = part.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise LuneError(f"--map: expected FIELD=COLUMN pairs separated by commas, got {part!r}")
        mapping[field.strip()] = column.strip()
    return mapping


def input_fields(source: str, path: str | None, *, hub: bool) -> dict[str, Any]:
    """The IngestSource fields that name the input: ``tofu:forget10`` is a benchmark reference,
    ``tofu`` (with a path) a format."""
    if ":" in source:
        if path is not None:
            raise LuneError(f"{source} is a benchmark reference: it names its files itself, leave out {path}")
        return {"benchmark": source, "hub": hub}
    fmt = ALIASES.get(source, source)
    if fmt not in FORMATS:
        raise LuneError(
            f"{source}: not a format ({', '.join(FORMATS + tuple(ALIASES))}) nor a benchmark reference "
            "(tofu:forget10, rwku:1_Stephen_King, knowundo:privacy)"
        )
    if path is None:
        raise LuneError(f"lune ingest {source}: give the PATH to read, or a benchmark reference such as tofu:forget10")
    return {"format": fmt, "path": path, "hub": hub}


def run(args: argparse.Namespace) -> int:
    from lune.core.config_base import validate_config
    from lune.data.config import IngestSource
    from lune.data.ingest import ingest
    from lune.data.store import Store

    source = validate_config(
        IngestSource,
        {
            **input_fields(args.source, args.path, hub=args.hub),
            "forget": args.forget,
            "corpus": args.corpus,
            "split": args.split,
            "fields": parse_mapping(args.fields),
            "skip_invalid": args.skip_invalid,
        },
        "lune ingest",
    )
    with Store.open(args.db) as store:
        result = ingest(store, source, progress=True)
    print(result.summary())
    if source.format == "generic" and source.path:
        from pathlib import Path

        from lune.data.loaders.generic import ignored_files

        ignored = ignored_files(Path(source.path))
        if ignored:
            print(
                f"skipped {len(ignored)} file(s) of {source.path} that are not data (not JSON Lines, JSON, CSV, "
                "TSV or Parquet): " + ", ".join(p.name for p in ignored[:20]) + (" ..." if len(ignored) > 20 else "")
            )
    if result.invalid:
        print(
            f'see the refused rows with: lune sql "SELECT source, location, field, reason FROM rejections '
            f"WHERE run_id = '{result.run_id}'\""
        )
    return 0
