"""What an unlearning run reads: a curated set (its ``train``, ``eval`` and ``forget`` splits, as
``data/export.py`` defines them) and the retain facts that anchor and measure retained knowledge.

A curated set comes either as rows (``curated_rows(store, name)``, or any dict of lists in that
shape) or as a directory written by ``lune export`` (a saved ``datasets.DatasetDict``: the export
folder or its ``hf`` subfolder).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lune.data.errors import LuneError
from lune.data.ids import content_id

REQUIRED: dict[str, tuple[str, ...]] = {
    "train": ("fact_id", "prompt", "target", "target_kind", "prompt_kind"),
    "forget": ("fact_id", "question", "answer", "key_span"),
}
RETAIN_COLUMNS = ("question", "answer", "key_span")


@dataclass
class UnlearnData:
    """The rows of one unlearning run (plain dicts)."""

    train: list[dict[str, Any]]
    forget: list[dict[str, Any]]
    retain: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    set_id: str | None = None
    source: str = "rows"

    @property
    def fact_ids(self) -> list[str]:
        return sorted({f["fact_id"] for f in self.forget})


def dataset_dir(path: Path) -> Path:
    """The saved DatasetDict folder of a ``lune export`` output (the folder itself or its ``hf``)."""
    if (path / "dataset_dict.json").exists():
        return path
    if (path / "hf" / "dataset_dict.json").exists():
        return path / "hf"
    raise LuneError(
        f"{path}: not a curated set export (no dataset_dict.json here or in {path / 'hf'}); "
        "write one with `lune export NAME OUT` or pass --set NAME"
    )


def _set_id_from_card(folder: Path) -> str | None:
    """The set id the export's dataset card names (``- set id: `...` ``), if any."""
    for card in (folder / "README.md", folder.parent / "README.md"):
        if card.exists():
            match = re.search(r"set id: `([^`]+)`", card.read_text(encoding="utf-8"))
            if match:
                return match.group(1)
    return None


def load_curated(
    source: str | Path | Mapping[str, Sequence[Mapping[str, Any]]], set_id: str | None = None
) -> tuple[dict[str, list[dict[str, Any]]], str | None, str]:
    """``(splits, set_id, description)`` from an export directory or from rows."""
    if isinstance(source, (str, Path)):
        import datasets

        folder = dataset_dir(Path(source))
        loaded = datasets.load_from_disk(str(folder))
        splits = {name: [dict(r) for r in loaded[name]] for name in loaded}
        return splits, set_id or _set_id_from_card(folder), str(folder)
    return {name: [dict(r) for r in rows] for name, rows in source.items()}, set_id, "rows"


def check_columns(split: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], where: str) -> None:
    """Raise a LuneError naming the first row of ``split`` that lacks one of ``columns``."""
    for number, row in enumerate(rows, start=1):
        missing = [c for c in columns if row.get(c) in (None, "")]
        if missing:
            raise LuneError(
                f"{where}: split {split!r}, row {number}: missing {', '.join(missing)} "
                f"(the curated-set contract is in data/export.py)"
            )


def build_data(
    source: str | Path | Mapping[str, Sequence[Mapping[str, Any]]],
    retain: Sequence[Mapping[str, Any]] = (),
    *,
    set_id: str | None = None,
) -> UnlearnData:
    """Validate a curated set and retain facts into :class:`UnlearnData`."""
    splits, found_id, where = load_curated(source, set_id)
    for split, columns in REQUIRED.items():
        if split not in splits:
            raise LuneError(f"{where}: no {split!r} split (found: {', '.join(sorted(splits)) or 'none'})")
        check_columns(split, splits[split], columns, where)
    if not splits["forget"]:
        raise LuneError(f"{where}: the 'forget' split is empty: there is nothing to unlearn")
    retain_rows = [dict(r) for r in retain]
    check_columns("retain", retain_rows, RETAIN_COLUMNS, "retain facts")
    for row in retain_rows:
        row.setdefault("fact_id", content_id("retain", row["question"], row["answer"]))
    forget_ids = {f["fact_id"] for f in splits["forget"]}
    overlap = forget_ids & {r["fact_id"] for r in retain_rows}
    if overlap:
        raise LuneError(
            f"retain facts include {len(overlap)} forget fact(s) (e.g. {sorted(overlap)[0]}); "
            "a fact cannot be both forgotten and retained"
        )
    if not set_id and not found_id:
        found_id = "rows:" + content_id([(r["fact_id"], r["prompt"], r["target"]) for r in splits["train"]])
    return UnlearnData(
        train=splits["train"],
        forget=splits["forget"],
        retain=retain_rows,
        eval=splits.get("eval", []),
        set_id=set_id or found_id,
        source=where,
    )
