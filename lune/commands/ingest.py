"""`lune ingest`: read a benchmark folder or a user's file into the store's facts and probes."""

from __future__ import annotations

import argparse

from lune.data.errors import LuneError

HELP = "read facts and probes (TOFU, RWKU, KnowUnDo, or your own JSONL / CSV / Parquet) into the store"
EXAMPLE = (
    "lune ingest tofu data/sample/tofu --forget forget01\n"
    "  lune ingest rwku ../shared/data/rwku/1_Stephen_King\n"
    "  lune ingest generic my_facts.csv --map question=prompt,answer=target --split forget --skip-invalid"
)
FORMATS = ("tofu", "rwku", "knowundo", "generic")
# Convenience names for the generic loader (it picks the reader from the file's extension).
ALIASES = {"jsonl": "generic", "json": "generic", "csv": "generic", "parquet": "generic"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=FORMATS + tuple(ALIASES),
                        help="input format (jsonl / json / csv / parquet are the generic loader)")
    parser.add_argument("path", help="file or folder to read (TOFU: the folder; RWKU: a target folder or the root)")
    parser.add_argument("--forget", help="TOFU: forget split, e.g. forget01 (retain is retain{100-NN})")
    parser.add_argument("--corpus", help="corpus name stored on each row (default: the format)")
    parser.add_argument("--split", help="generic: split of rows without a split column (default: forget)")
    parser.add_argument("--map", dest="fields", metavar="FIELD=COLUMN,...", default="",
                        help="generic: the file's column for each field (question, answer, subject, split, "
                             "key_span, group_name)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="store the good rows and record each bad one in the rejections table")


def parse_mapping(text: str) -> dict[str, str]:
    """``question=prompt,answer=target`` -> ``{"question": "prompt", "answer": "target"}``."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        field, sep, column = part.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise LuneError(f"--map: expected FIELD=COLUMN pairs separated by commas, got {part!r}")
        mapping[field.strip()] = column.strip()
    return mapping


def run(args: argparse.Namespace) -> int:
    from lune.data.config import IngestSource
    from lune.data.ingest import ingest
    from lune.data.store import Store
    from lune.core.config_base import validate_config

    source = validate_config(IngestSource, {
        "format": ALIASES.get(args.format, args.format), "path": args.path, "forget": args.forget,
        "corpus": args.corpus, "split": args.split, "fields": parse_mapping(args.fields),
        "skip_invalid": args.skip_invalid,
    }, "lune ingest")
    with Store.open(args.db) as store:
        result = ingest(store, source, progress=True)
    print(result.summary())
    if result.invalid:
        print(f"see the refused rows with: lune sql \"SELECT source, location, field, reason FROM rejections "
              f"WHERE run_id = '{result.run_id}'\"")
    return 0
