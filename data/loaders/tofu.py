"""TOFU (Maini et al., 2024): 200 fictitious authors x 20 question/answer pairs, as JSON Lines.

A TOFU folder holds ``forgetNN.json`` / ``retain{100-NN}.json`` (the two halves of ``full.json``),
``world_facts.json`` and ``real_authors.json`` (utility: short answers with four options), and an
``X_perturbed.json`` evaluation file for each. One ingest reads, for the chosen forget split:

| file | becomes |
|---|---|
| ``forgetNN.json`` | facts, split ``forget``, group ``forgetNN`` |
| ``retain{100-NN}.json`` | facts, split ``retain`` |
| ``holdoutNN.json`` (if the folder has it, as the Hub's TOFU does) | facts, split ``holdout``, group ``holdoutNN`` |
| ``world_facts.json``, ``real_authors.json`` | facts, split ``utility``; the answer is the key span; options in ``extra`` |
| ``forgetNN_perturbed.json``, ``retain_perturbed.json`` | probes ``paraphrased_question``, ``paraphrased_answer``, ``perturbed_answer`` (one per wrong answer) |
| ``world_facts_perturbed.json``, ``real_authors_perturbed.json`` | probes ``perturbed_answer`` |

**Holdout.** Membership inference on TOFU (open-unlearning's MIA and privleak) compares the forget
facts with facts of the same kind the model never saw: the ``holdoutNN`` split, the same size as
``forgetNN``. lune teaches its own model, so when the folder has no ``holdoutNN.json`` the loader
holds out that many rows of the retain file instead (whole authors, the last ones of the file that
``retain_perturbed.json`` does not cover, so TOFU's retain evaluation set stays taught): they become
split ``holdout`` (group ``holdoutNN``), which teaching leaves out. When the retain file has fewer
such rows, the holdout is smaller (possibly empty); :func:`holdout_note` says so.

A probe is tied to its fact by the fact's content id (corpus + question + answer), so the link holds
whichever file the fact came from. Authors have no name field: the subject of each block of 20
rows (one author, in the files' order) is the name its questions (else answers) mention most often.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from lune.data.config import IngestSource
from lune.data.errors import LuneError
from lune.data.loaders.common import (
    Item,
    LoadedFile,
    fact_row,
    load_file,
    probe_row,
    read_jsonl,
    require_path,
    text_field,
    text_list_field,
)
from lune.data.records import fact_id

FORGET_STEM = re.compile(r"^forget(\d{2})$")
UTILITY_FILES = ("world_facts", "real_authors")
ROWS_PER_AUTHOR = 20
# A person's name in a question: capitalised words, possibly with particles ("Al-Kuwaiti", "van Dyke").
_NAME = re.compile(r"\b[A-Z][\w'’.-]*(?:\s+(?:(?:de|van|von|da|di|del|la|le|bin|al|y)\s+)?\(?[A-Z][\w'’.-]*\)?){1,4}")
_NOT_NAMES = {
    "What",
    "Which",
    "Who",
    "How",
    "Can",
    "Could",
    "Does",
    "Did",
    "Has",
    "Have",
    "Is",
    "Are",
    "Was",
    "Were",
    "In",
    "Why",
    "When",
    "Where",
    "Do",
    "Would",
    "Regarding",
    "Apart",
    "Besides",
    "Aside",
}


def forget_stems(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("forget*.json") if FORGET_STEM.match(p.stem))


def retain_stem(forget: str) -> str:
    """The retain split that completes a forget split: ``forget05`` -> ``retain95``."""
    match = FORGET_STEM.match(forget)
    if not match:
        raise LuneError(f"--forget {forget}: expected forgetNN, e.g. forget01, forget05 or forget10")
    return f"retain{100 - int(match.group(1)):02d}"


def holdout_stem(forget: str) -> str:
    """The holdout split the same size as a forget split: ``forget05`` -> ``holdout05``."""
    return "holdout" + forget.removeprefix("forget")


def _perturbed_keys(path: Path, corpus: str) -> set[str]:
    """Fact ids of the rows of a ``*_perturbed.json`` file (empty when it is missing; its bad rows
    are reported when it is loaded as probes)."""
    if not path.exists():
        return set()
    keys = set()
    for item in read_jsonl(path, []):
        question, answer = item.obj.get("question"), item.obj.get("answer")
        if isinstance(question, str) and isinstance(answer, str):
            keys.add(fact_id(corpus, question.strip(), answer.strip()))
    return keys


def hold_out_authors(retain: list[dict], wanted: int, covered: set[str], group: str) -> int:
    """Mark whole authors (blocks of 20 rows) of the ``retain`` fact rows as split ``holdout``
    (group ``group``), from the last author back, skipping any author with a row in ``covered``
    (TOFU's retain evaluation set), until ``wanted`` rows are held out or none is left. Returns how
    many rows were held out (``wanted`` when the file has enough)."""
    blocks: dict[int, list[dict]] = {}
    for row in retain:
        blocks.setdefault((row["source_line"] - 1) // ROWS_PER_AUTHOR, []).append(row)
    held = 0
    for key in sorted(blocks, reverse=True):
        block = blocks[key]
        if held + len(block) > wanted or any(row["fact_id"] in covered for row in block):
            continue
        for row in block:
            row["split"] = "holdout"
            row["group_name"] = group
        held += len(block)
        if held == wanted:
            break
    return held


def load(source: IngestSource, *, progress: bool = False) -> list[LoadedFile]:
    folder = require_path(source.path, "TOFU folder")
    if not folder.is_dir():
        raise LuneError(f"{folder}: a TOFU source is the folder holding forgetNN.json, retainNN.json, ...")
    corpus = source.corpus or "tofu"
    forget = source.forget
    if forget is None:
        found = forget_stems(folder)
        if len(found) != 1:
            raise LuneError(f"{folder}: choose the forget split with --forget (found: {', '.join(found) or 'none'})")
        forget = found[0]
    retain = retain_stem(forget)
    for stem in (forget, retain):
        if not (folder / f"{stem}.json").exists():
            raise LuneError(
                f"{folder / (stem + '.json')}: not found; the {forget} split needs {forget}.json and "
                f"{retain}.json in {folder}"
            )

    forget_file = _load_facts(folder / f"{forget}.json", corpus, "forget", progress)
    retain_file = _load_facts(folder / f"{retain}.json", corpus, "retain", progress)
    files = [forget_file, retain_file]
    holdout = holdout_stem(forget)
    if (folder / f"{holdout}.json").exists():
        files.append(_load_facts(folder / f"{holdout}.json", corpus, "holdout", progress))
    else:
        covered = _perturbed_keys(folder / "retain_perturbed.json", corpus)
        hold_out_authors(retain_file.facts, len(forget_file.facts), covered, holdout)
    for stem in UTILITY_FILES:
        if (folder / f"{stem}.json").exists():
            files.append(_load_facts(folder / f"{stem}.json", corpus, "utility", progress))
    subjects = {row["fact_id"]: row["subject"] for loaded in files for row in loaded.facts}
    for stem in (f"{forget}_perturbed", "retain_perturbed", *(f"{u}_perturbed" for u in UTILITY_FILES)):
        if (folder / f"{stem}.json").exists():
            files.append(_load_probes(folder / f"{stem}.json", corpus, subjects, progress))
    return files


def _load_facts(path: Path, corpus: str, split: str, progress: bool) -> LoadedFile:
    source_file, group = str(path), path.stem
    utility = split == "utility"

    def handle(item: Item, loaded: LoadedFile) -> None:
        question = text_field(item.obj, "question")
        answer = text_field(item.obj, "answer")
        extra = None
        if utility:
            keys = sorted((k for k in item.obj if re.fullmatch(r"option\d+", k)), key=lambda k: int(k[6:]))
            options = [text_field(item.obj, k) for k in keys]
            extra = {"options": options} if options else None
        loaded.facts.append(
            fact_row(
                corpus=corpus,
                source_file=source_file,
                source_line=item.source_line,
                question=question,
                answer=answer,
                split=split,
                group_name=group,
                extra=extra,
                # Utility answers are single options ("Paris"): the dataset's own answer unit.
                key_span=answer if utility else None,
            )
        )

    loaded = load_file(path, read_jsonl, handle, progress=progress)
    if not utility:
        _name_authors(loaded)
    return loaded


def _load_probes(path: Path, corpus: str, subjects: dict[str, str | None], progress: bool) -> LoadedFile:
    source_file = str(path)
    utility = path.stem.removesuffix("_perturbed") in UTILITY_FILES

    def handle(item: Item, loaded: LoadedFile) -> None:
        obj, line = item.obj, item.source_line
        question = text_field(obj, "question")
        answer = text_field(obj, "answer")
        perturbed = text_list_field(obj, "perturbed_answer")
        paraphrased_q = text_field(obj, "paraphrased_question", required=not utility)
        paraphrased_a = text_field(obj, "paraphrased_answer", required=not utility)
        fid = fact_id(corpus, question, answer)
        common = {
            "corpus": corpus,
            "source_file": source_file,
            "source_line": line,
            "fact_id": fid,
            "subject": subjects.get(fid),
        }
        rows = []
        if paraphrased_q:
            rows.append(probe_row(kind="paraphrased_question", text=paraphrased_q, answer=answer, **common))
        if paraphrased_a:
            rows.append(probe_row(kind="paraphrased_answer", text=paraphrased_a, **common))
        rows.extend(
            probe_row(kind="perturbed_answer", text=text, extra={"index": i}, **common)
            for i, text in enumerate(perturbed)
        )
        loaded.probes.extend(rows)

    return load_file(path, read_jsonl, handle, progress=progress)


def _name_authors(loaded: LoadedFile) -> None:
    """Set each fact's subject to its author's name: per block of 20 lines (one author), the name
    most of its questions (else answers) mention; NULL when none stands out (under 3 mentions)."""
    blocks: dict[int, list[dict]] = {}
    for row in loaded.facts:
        blocks.setdefault((row["source_line"] - 1) // ROWS_PER_AUTHOR, []).append(row)
    for block in blocks.values():
        for field in ("question", "answer"):  # some authors are only named in the answers
            counts: Counter[str] = Counter()
            for row in block:
                counts.update(set(_names(row[field])))
            name, count = max(counts.items(), key=lambda kv: (kv[1], len(kv[0])), default=(None, 0))
            if count >= 3:
                for row in block:
                    row["subject"] = name
                break


def _names(text: str) -> list[str]:
    names = []
    for match in _NAME.finditer(text):
        words = re.sub(r"['’]s?$", "", match.group(0)).split()
        while words and words[0] in _NOT_NAMES:
            words = words[1:]
        if len(words) >= 2:
            names.append(" ".join(words))
    return names
