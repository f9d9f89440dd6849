"""KnowUnDo (Tian et al., 2024): JSON arrays of ``{text, labels}`` = (question, answer).

The source path is a domain folder (``knowundo/privacy``), the KnowUnDo root holding domain
folders, or one file. ``unlearn_*.json`` become forget facts and ``retention_*.json`` retain facts,
with the file stem as group (``unlearn_train``, ``retention_val``, ...) and the domain in ``extra``.
``full.json`` is the union of the others and is not read. KnowUnDo has no answer spans: the key
span is derived (``data.key_span``).
"""

from __future__ import annotations

from pathlib import Path

from lune.data.config import IngestSource
from lune.data.errors import LuneError
from lune.data.loaders.common import Item, LoadedFile, fact_row, load_file, read_json_array, require_path, text_field

SPLIT_PREFIXES = {"unlearn_": "forget", "retention_": "retain"}


def split_of(path: Path) -> str | None:
    for prefix, split in SPLIT_PREFIXES.items():
        if path.stem.startswith(prefix):
            return split
    return None


def knowundo_files(path: Path) -> list[Path]:
    """The unlearn_* / retention_* files at ``path`` (a file, a domain folder, or the root)."""
    if path.is_file():
        if split_of(path) is None:
            raise LuneError(f"{path}: a KnowUnDo file is named unlearn_*.json or retention_*.json")
        return [path]
    found = sorted(p for p in path.glob("*.json") if split_of(p))
    if not found:
        found = sorted(p for p in path.glob("*/*.json") if split_of(p))
    if not found:
        raise LuneError(f"{path}: no KnowUnDo unlearn_*.json or retention_*.json files here or one folder down")
    return found


def load(source: IngestSource, *, progress: bool = False) -> list[LoadedFile]:
    corpus = source.corpus or "knowundo"
    return [_load_file(path, corpus, progress) for path in knowundo_files(require_path(source.path))]


def _load_file(path: Path, corpus: str, progress: bool) -> LoadedFile:
    source_file, split, group, domain = str(path), split_of(path), path.stem, path.parent.name

    def handle(item: Item, loaded: LoadedFile) -> None:
        question = text_field(item.obj, "text")
        answer = text_field(item.obj, "labels")
        loaded.facts.append(
            fact_row(
                corpus=corpus,
                source_file=source_file,
                source_line=item.source_line,
                question=question,
                answer=answer,
                split=split,
                group_name=group,
                extra={"domain": domain},
            )
        )

    return load_file(path, read_json_array, handle, progress=progress)
