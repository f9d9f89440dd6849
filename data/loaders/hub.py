"""Benchmarks read from the Hugging Face Hub, written in the shipped copy's layout so that the same
loaders read them.

Used for a reference (``data.loaders.benchmarks``) when the source says ``hub: true`` or the
environment says ``LUNE_BENCHMARK_SOURCE=hub``. It needs network, and lune's command line sets
``HF_HUB_OFFLINE=1`` unless you set it yourself: run with ``HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0``.
Each file is read with ``datasets.load_dataset`` (cached by ``datasets`` as usual) and written under
``<HF_DATASETS_CACHE>/lune/<benchmark>/``. The tests do not run this (no network there); the shipped
copies are the same files.

- TOFU, ``locuslab/TOFU``: a config per file (``forget10``, ``retain90``, ``forget10_perturbed``, ...),
  split ``train``, written as ``tofu/<config>.json`` in JSON Lines;
- RWKU, ``jinzhuoran/RWKU``: the files of ``Target/<folder>/`` that ingest reads, written as
  ``rwku/<folder>/<file>.json`` JSON arrays;
- KnowUnDo, ``zjunlp/KnowUnDo``: config = the domain, splits ``unlearn`` and ``retention``, each one
  row of ``train`` and ``val`` lists, written as ``knowundo/<domain>/<split>_<train|val>.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lune.data.errors import LuneError
from lune.data.loaders import rwku, tofu

HUB_DATASETS = {"tofu": "locuslab/TOFU", "rwku": "jinzhuoran/RWKU", "knowundo": "zjunlp/KnowUnDo"}
# Parts each dataset is known to have; RWKU's 200 targets are looked up when one is read.
HUB_PARTS: dict[str, list[str] | None] = {
    "tofu": ["forget01", "forget05", "forget10"],
    "rwku": None,
    "knowundo": ["privacy", "copyright"],
}
RWKU_ALL = "all"


def download(benchmark: str, part: str) -> Path:
    """Read ``part`` of ``benchmark`` from the Hub; the root folder holding ``<benchmark>/...`` as shipped."""
    from datasets import config

    root = Path(config.HF_DATASETS_CACHE) / "lune"
    try:
        {"tofu": _tofu, "rwku": _rwku, "knowundo": _knowundo}[benchmark](root / benchmark, part)
    except LuneError:
        raise
    except Exception as err:  # network, offline mode, a dataset that changed: one message says what to do
        raise LuneError(
            f"{benchmark}:{part} from the Hugging Face Hub ({HUB_DATASETS[benchmark]}): "
            f"{type(err).__name__}: {err}. Reading from the Hub needs network, HF_HUB_OFFLINE=0 (lune sets it to 1 "
            "unless you set it) and HF_DATASETS_OFFLINE unset or 0; without network, leave hub off to read the "
            "copy shipped with lune"
        ) from err
    return root


def _tofu(folder: Path, forget: str) -> None:
    from datasets import load_dataset

    configs = [
        forget,
        tofu.retain_stem(forget),
        f"{forget}_perturbed",
        "retain_perturbed",
        *(f"{name}{suffix}" for name in tofu.UTILITY_FILES for suffix in ("", "_perturbed")),
    ]
    for name in configs:
        _write(load_dataset(HUB_DATASETS["tofu"], name, split="train"), folder / f"{name}.json", lines=True)


def _rwku(folder: Path, part: str) -> None:
    from datasets import load_dataset
    from huggingface_hub import list_repo_files

    files: dict[str, set[str]] = {}  # target folder -> its file names
    for path in list_repo_files(HUB_DATASETS["rwku"], repo_type="dataset"):
        top, _, rest = path.partition("/")
        target, _, name = rest.partition("/")
        if top == "Target" and name:
            files.setdefault(target, set()).add(name)
    if part != RWKU_ALL and part not in files:
        raise LuneError(
            f"rwku:{part}: no such target on the Hugging Face Hub ({HUB_DATASETS['rwku']}); "
            f"targets are named like {', '.join(sorted(files)[:5])}, ..."
        )
    for target in sorted(files) if part == RWKU_ALL else [part]:
        stems = [stem for stem in rwku.READ_FILES if f"{stem}.json" in files[target]]
        data = load_dataset(HUB_DATASETS["rwku"], data_files={stem: f"Target/{target}/{stem}.json" for stem in stems})
        for stem in stems:
            _write(data[stem], folder / target / f"{stem}.json", lines=False)


def _knowundo(folder: Path, domain: str) -> None:
    from datasets import load_dataset

    for split in ("unlearn", "retention"):
        row = load_dataset(HUB_DATASETS["knowundo"], name=domain, split=split)[0]
        for half in ("train", "val"):
            _write(row[half], folder / domain / f"{split}_{half}.json", lines=False)


def _write(rows: Iterable[dict[str, Any]], path: Path, *, lines: bool) -> None:
    """Rows as JSON Lines or one JSON array; the null fields ``datasets`` adds for columns a row lacks are dropped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = [{key: value for key, value in row.items() if value is not None} for row in rows]
    with path.open("w", encoding="utf-8") as out:
        if lines:
            out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in clean)
        else:
            json.dump(clean, out, ensure_ascii=False, indent=1)
