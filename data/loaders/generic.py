"""A user's own facts: JSON Lines, a JSON array, CSV / TSV or Parquet, with a field mapping.

The mapping names the file's column for each of lune's fields (``--map question=prompt,answer=target``);
an unmapped field is read from the column of the same name when there is one.

| field | required | meaning |
|---|---|---|
| ``question`` | yes | the question |
| ``answer`` | yes | the answer |
| ``subject`` | no | who or what the fact is about |
| ``split`` | no | forget / retain / holdout / utility; else ``--split``, else ``forget`` |
| ``key_span`` | no | the part of the answer that must disappear; derived when absent |
| ``group_name`` | no | a finer origin of the row |

Columns the mapping does not use are kept in ``extra``. The source path is a file or a folder of
such files (read in name order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lune.data.config import IngestSource
from lune.data.errors import LuneError
from lune.data.loaders.common import READERS, Item, LoadedFile, RowError, fact_row, load_file, require_path, text_field
from lune.data.records import SPLITS

FIELDS = ("question", "answer", "subject", "split", "key_span", "group_name")
REQUIRED = ("question", "answer")
DEFAULT_SPLIT = "forget"


def generic_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix.lower() not in READERS:
            raise LuneError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(sorted(READERS))}")
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in READERS)
    if not found:
        raise LuneError(f"{path}: no {', '.join(sorted(READERS))} files in this folder")
    return found


def ignored_files(path: Path) -> list[Path]:
    """Files of the folder ``path`` that :func:`generic_files` leaves out (not a data file type;
    hidden files aside), for the command line to list."""
    if not path.is_dir():
        return []
    return sorted(
        p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in READERS
    )


def load(source: IngestSource, *, progress: bool = False) -> list[LoadedFile]:
    unknown = sorted(set(source.fields) - set(FIELDS))
    if unknown:
        raise LuneError(f"field mapping: unknown field(s) {', '.join(unknown)}; lune's fields are {', '.join(FIELDS)}")
    if source.split is not None and source.split not in SPLITS:
        raise LuneError(f"--split {source.split}: expected one of {', '.join(SPLITS)}")
    corpus = source.corpus or "generic"
    return [_load_file(path, source, corpus, progress) for path in generic_files(require_path(source.path))]


def _load_file(path: Path, source: IngestSource, corpus: str, progress: bool) -> LoadedFile:
    source_file = str(path)
    columns = {name: source.fields.get(name, name) for name in FIELDS}
    mapped = set(source.fields)
    # A split column is read when mapped, or when present and no --split was given.
    default_split = source.split or DEFAULT_SPLIT
    split_from_rows = "split" in mapped or source.split is None
    used = set(columns.values())

    def handle(item: Item, loaded: LoadedFile) -> None:
        obj = item.obj
        question = text_field(obj, columns["question"])
        answer = text_field(obj, columns["answer"])
        optional: dict[str, str | None] = {}
        for name in ("subject", "key_span", "group_name"):
            if name in mapped and columns[name] not in obj:  # a mapped column must exist; it may be blank
                raise RowError(columns[name], "missing")
            optional[name] = text_field(obj, columns[name], required=False)
        split = default_split
        if split_from_rows and (columns["split"] in obj or "split" in mapped):
            split = text_field(obj, columns["split"])
            if split not in SPLITS:
                raise RowError(columns["split"], f"{split!r} is not a split; use one of {', '.join(SPLITS)}")
        extra: dict[str, Any] = {k: v for k, v in obj.items() if k not in used}
        loaded.facts.append(
            fact_row(
                corpus=corpus,
                source_file=source_file,
                source_line=item.source_line,
                question=question,
                answer=answer,
                split=split,
                subject=optional["subject"],
                group_name=optional["group_name"],
                key_span=optional["key_span"],
                extra=extra,
            )
        )

    return load_file(path, READERS[path.suffix.lower()], handle, progress=progress)
