"""RWKU (Jin et al., 2024): real-world knowledge unlearning, one folder per target person.

A target folder (``<n>_<Name>/``, e.g. ``1_Stephen_King``, ``24_Beyoncé``,
``10_Prince_Harry,_Duke_of_Sussex``) holds JSON arrays. The source path is one target folder or
the RWKU root holding many. The subject of every row is the target, from ``intro.json`` (else the
folder name without its number).

| file | becomes |
|---|---|
| ``forget_level1.json`` (cloze), ``forget_level2.json`` (questions) | facts, split ``forget``; the answer is the key span (``dataset``) |
| ``forget_level3.json`` | probes ``adversarial`` with ``attack_type`` = the row's type and the answer; tied to a fact only when a level 1/2 fact has the same query |
| ``neighbor_level1.json``, ``neighbor_level2.json`` | facts, split ``retain`` (the neighbour in ``extra``) |
| ``forget_mia.json`` / ``retain_mia.json`` | probes ``mia_member`` / ``mia_nonmember`` |
| ``negative.json`` | probes ``negative_text`` (model-written negatives; their ``id`` in ``extra``) |

``passage.json`` (the source text) is not read: nothing downstream uses it yet. RWKU repeats some
(query, answer) pairs inside a file; the store keeps one fact per pair (content ids).
"""

from __future__ import annotations

import re
from pathlib import Path

from lune.data.config import IngestSource
from lune.data.errors import LuneError
from lune.data.loaders.common import (
    Item,
    LoadedFile,
    RowError,
    fact_row,
    load_file,
    probe_row,
    read_json_array,
    require_path,
    text_field,
)

FACT_FILES = {
    "forget_level1": "forget",
    "forget_level2": "forget",
    "neighbor_level1": "retain",
    "neighbor_level2": "retain",
}
MIA_FILES = {"forget_mia": "mia_member", "retain_mia": "mia_nonmember"}
TARGET_MARKERS = ("intro.json", "forget_level1.json", "forget_level2.json", "forget_level3.json")
# Every file of a target folder that an ingest reads, as stems (passage.json is not read).
READ_FILES = ("intro", *FACT_FILES, "forget_level3", *MIA_FILES, "negative")


def is_target_folder(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in TARGET_MARKERS)


def target_folders(path: Path) -> list[Path]:
    """``path`` itself when it is a target folder, else its target sub-folders in RWKU's order."""
    if is_target_folder(path):
        return [path]
    found = [p for p in path.iterdir() if is_target_folder(p)] if path.is_dir() else []
    if not found:
        raise LuneError(f"{path}: not an RWKU target folder (no intro.json or forget_level*.json) and holds none")

    def order(p: Path) -> tuple[int, str]:
        number = re.match(r"^(\d+)_", p.name)
        return (int(number.group(1)) if number else 1 << 30, p.name)

    return sorted(found, key=order)


def folder_subject(folder: Path) -> str:
    """``24_Beyoncé`` -> ``Beyoncé``; ``10_Prince_Harry,_Duke_of_Sussex`` -> ``Prince Harry, Duke of Sussex``."""
    return re.sub(r"^\d+_", "", folder.name).replace("_", " ").strip()


def load(source: IngestSource, *, progress: bool = False) -> list[LoadedFile]:
    root = require_path(source.path, "RWKU folder")
    corpus = source.corpus or "rwku"
    files: list[LoadedFile] = []
    for folder in target_folders(root):
        files.extend(_load_target(folder, corpus, progress))
    return files


def _load_target(folder: Path, corpus: str, progress: bool) -> list[LoadedFile]:
    files = []
    subject = folder_subject(folder)
    if (folder / "intro.json").exists():
        intro, target = _load_intro(folder / "intro.json")
        files.append(intro)
        subject = target or subject

    forget_queries: dict[str, str] = {}
    for stem, split in FACT_FILES.items():
        path = folder / f"{stem}.json"
        if path.exists():
            loaded = _load_facts(path, corpus, subject, split, progress)
            if split == "forget":
                forget_queries.update((row["question"], row["fact_id"]) for row in loaded.facts)
            files.append(loaded)
    if (folder / "forget_level3.json").exists():
        files.append(_load_adversarial(folder / "forget_level3.json", corpus, subject, forget_queries, progress))
    for stem, kind in MIA_FILES.items():
        if (folder / f"{stem}.json").exists():
            files.append(_load_texts(folder / f"{stem}.json", corpus, subject, kind, progress))
    if (folder / "negative.json").exists():
        files.append(_load_texts(folder / "negative.json", corpus, subject, "negative_text", progress))
    return files


def _load_intro(path: Path) -> tuple[LoadedFile, str | None]:
    """The intro file (no rows of its own, but its problems count) and the target it names."""
    targets: list[str] = []

    def handle(item: Item, loaded: LoadedFile) -> None:
        targets.append(text_field(item.obj, "target"))

    return load_file(path, read_json_array, handle), (targets[0] if targets else None)


def _load_facts(path: Path, corpus: str, subject: str, split: str, progress: bool) -> LoadedFile:
    source_file, group, neighbour = str(path), path.stem, split == "retain"

    def handle(item: Item, loaded: LoadedFile) -> None:
        obj = item.obj
        query = text_field(obj, "query")
        answer = text_field(obj, "answer")
        extra = {"type": text_field(obj, "type", required=False)}
        if neighbour:
            extra["neighbor"] = text_field(obj, "neighbor", required=False)
        loaded.facts.append(
            fact_row(
                corpus=corpus,
                source_file=source_file,
                source_line=item.source_line,
                question=query,
                answer=answer,
                split=split,
                subject=subject,
                group_name=group,
                key_span=answer,  # RWKU answers are the spans
                extra={k: v for k, v in extra.items() if v is not None},
            )
        )

    return load_file(path, read_json_array, handle, progress=progress)


def _load_adversarial(
    path: Path, corpus: str, subject: str, forget_queries: dict[str, str], progress: bool
) -> LoadedFile:
    source_file = str(path)

    def handle(item: Item, loaded: LoadedFile) -> None:
        query = text_field(item.obj, "query")
        answer = text_field(item.obj, "answer")
        attack_type = text_field(item.obj, "type")
        loaded.probes.append(
            probe_row(
                corpus=corpus,
                kind="adversarial",
                text=query,
                answer=answer,
                attack_type=attack_type,
                subject=subject,
                fact_id=forget_queries.get(query),
                source_file=source_file,
                source_line=item.source_line,
            )
        )

    return load_file(path, read_json_array, handle, progress=progress)


def _load_texts(path: Path, corpus: str, subject: str, kind: str, progress: bool) -> LoadedFile:
    source_file = str(path)

    def handle(item: Item, loaded: LoadedFile) -> None:
        obj = item.obj
        text = text_field(obj, "text")
        extra = {}
        if kind == "negative_text":
            if "id" in obj and not isinstance(obj["id"], (str, int)):
                raise RowError("id", f"expected a string or number, got {type(obj['id']).__name__}")
            extra["id"] = obj.get("id")
        elif isinstance(obj.get("ngram"), int):
            extra["ngram"] = obj["ngram"]
        loaded.probes.append(
            probe_row(
                corpus=corpus,
                kind=kind,
                text=text,
                subject=subject,
                source_file=source_file,
                source_line=item.source_line,
                extra={k: v for k, v in extra.items() if v is not None},
            )
        )

    return load_file(path, read_json_array, handle, progress=progress)
