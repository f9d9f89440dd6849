"""Ingest: read facts and probes from benchmark files or a user's own, validate every row, store them.

    >>> with Store.open("lune.duckdb") as store:
    ...     result = ingest(store, {"format": "tofu", "path": "data/sample/tofu", "forget": "forget01"})
    >>> print(result.summary())

Every file is read and checked completely before anything is written. A bad row (malformed JSON,
a missing / empty / wrongly typed field, undecodable bytes) stops the ingest with
``file:line: field: problem`` and nothing is written; with ``skip_invalid`` the good rows are
written and each bad one becomes a ``rejections`` row. Each file is written in one transaction.
Ids are content hashes, so ingesting the same input again adds nothing. Each call is one ``runs``
row (kind ``ingest``) with the counts in ``metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from lune.data.config import IngestConfig, IngestSource
from lune.data.ingest_queries import stored_splits
from lune.data.loaders import load_source
from lune.data.loaders.common import LoadedFile, Problem
from lune.data.store import Store

FACT_SCHEMA = pa.schema(
    [
        ("fact_id", pa.string()),
        ("corpus", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int32()),
        ("subject", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("key_span", pa.string()),
        ("key_span_source", pa.string()),
        ("split", pa.string()),
        ("group_name", pa.string()),
        ("extra", pa.string()),
    ]
)
PROBE_SCHEMA = pa.schema(
    [
        ("probe_id", pa.string()),
        ("fact_id", pa.string()),
        ("corpus", pa.string()),
        ("subject", pa.string()),
        ("kind", pa.string()),
        ("text", pa.string()),
        ("answer", pa.string()),
        ("attack_type", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int32()),
        ("extra", pa.string()),
    ]
)

Sources = IngestSource | IngestConfig | Mapping[str, Any] | Sequence[IngestSource | Mapping[str, Any]]


@dataclass
class IngestResult:
    """What one ingest did. ``skipped_existing``: rows already in the store (an earlier ingest);
    ``duplicates``: rows repeated inside this input (RWKU repeats some); ``split_conflicts``: facts
    already stored under another split (kept as stored)."""

    run_id: str
    files: int = 0
    rows_read: int = 0
    facts: int = 0
    probes: int = 0
    invalid: int = 0
    rejections: int = 0
    skipped_existing: int = 0
    duplicates: int = 0
    split_conflicts: int = 0
    seconds: float = 0.0
    per_file: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        parts = [f"{self.facts} facts", f"{self.probes} probes"]
        if self.skipped_existing:
            parts.append(f"{self.skipped_existing} already stored")
        if self.duplicates:
            parts.append(f"{self.duplicates} repeated in the input")
        if self.invalid:
            parts.append(f"{self.invalid} invalid rows skipped ({self.rejections} new rejections rows)")
        text = (
            f"ingested {', '.join(parts)} from {self.files} files ({self.rows_read} rows read) "
            f"in {self.seconds:.1f} s; run {self.run_id}"
        )
        if self.split_conflicts:
            text += (
                f"\nwarning: {self.split_conflicts} facts were already stored under another split and keep "
                "it; ingest into another --db or --corpus to keep benchmark splits apart"
            )
        return text


def as_sources(sources: Sources) -> list[IngestSource]:
    """Normalise what callers pass (one source, a list, an IngestConfig, plain dicts) to a list."""
    if isinstance(sources, IngestConfig):
        return list(sources.sources)
    if isinstance(sources, (IngestSource, Mapping)):
        sources = [sources]
    out = []
    for source in sources:
        if isinstance(source, IngestSource):
            out.append(source)
        elif isinstance(source, Mapping) and "sources" in source:
            out.extend(IngestConfig.model_validate(source).sources)
        else:
            out.append(IngestSource.model_validate(source))
    return out


def read_sources(sources: Iterable[IngestSource], *, progress: bool = False) -> list[tuple[IngestSource, LoadedFile]]:
    """Run each source's loader: every file read and checked, nothing written."""
    return [(source, loaded) for source in sources for loaded in load_source(source, progress=progress)]


def ingest(
    store: Store,
    sources: Sources,
    *,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    skip_invalid: bool | None = None,
    progress: bool = False,
) -> IngestResult:
    """Ingest ``sources`` into ``store`` as one run (see the module docstring).

    ``skip_invalid`` overrides the sources' own setting (the CLI's ``--skip-invalid``). Raises
    :class:`data.errors.InputError` for the first bad row when invalid rows are not skipped.
    """
    started = time.perf_counter()
    source_list = as_sources(sources)
    config = {"sources": [s.model_dump() for s in source_list]}
    with store.run("ingest", config, run_id=run_id, parent_run_id=parent_run_id) as run:
        result = IngestResult(run_id=run.run_id)
        try:
            files = read_sources(source_list, progress=progress)
            _raise_first_problem(
                [
                    loaded
                    for source, loaded in files
                    if not (skip_invalid if skip_invalid is not None else source.skip_invalid)
                ]
            )
            seen_facts: set[str] = set()
            seen_probes: set[str] = set()
            for _, loaded in files:
                _write_file(store, loaded, run.run_id, result, seen_facts, seen_probes)
        finally:  # the counts so far, on a failed run too
            run.metrics.update(_metrics(result, started))
    return result


def _raise_first_problem(files: list[LoadedFile]) -> None:
    problems = [p for f in files for p in f.problems]
    if not problems:
        return
    first = problems[0]
    more = len(problems) - 1
    hint = (
        f" ({more} more bad rows; nothing was stored: fix them, or rerun with --skip-invalid "
        "to store the good rows and record the bad ones in the rejections table)"
        if more
        else " (nothing was stored: fix it, or rerun with --skip-invalid to store the good rows "
        "and record the bad one in the rejections table)"
    )
    raise Problem(first.source, first.line, first.field, first.problem + hint).error()


def _write_file(
    store: Store, loaded: LoadedFile, run_id: str, result: IngestResult, seen_facts: set[str], seen_probes: set[str]
) -> None:
    facts = _unique(loaded.facts, "fact_id", seen_facts)
    probes = _unique(loaded.probes, "probe_id", seen_probes)
    duplicates = len(loaded.facts) - len(facts) + len(loaded.probes) - len(probes)
    with store.transaction():
        new_facts = store.insert("facts", _arrow(facts, FACT_SCHEMA)) if facts else 0
        new_probes = store.insert("probes", _arrow(probes, PROBE_SCHEMA)) if probes else 0
        new_rejections = (
            store.reject(
                [
                    {
                        "run_id": run_id,
                        "stage": "ingest",
                        "source": p.source,
                        "location": str(p.line) if p.line is not None else None,
                        "field": p.field,
                        "reason": p.problem,
                        "payload": p.payload,
                    }
                    for p in loaded.problems
                ]
            )
            if loaded.problems
            else 0
        )
    skipped = len(facts) - new_facts + len(probes) - new_probes
    conflicts = 0
    if len(facts) > new_facts:
        # The same fact can sit in different splits of a benchmark (TOFU's forget10 holds retain99
        # rows): the stored split wins, and the user is told.
        stored = stored_splits(store, [row["fact_id"] for row in facts])
        conflicts = sum(1 for row in facts if stored.get(row["fact_id"], row["split"]) != row["split"])
    result.files += 1
    result.rows_read += loaded.rows_read
    result.facts += new_facts
    result.probes += new_probes
    result.invalid += len(loaded.problems)
    result.rejections += new_rejections
    result.skipped_existing += skipped
    result.duplicates += duplicates
    result.split_conflicts += conflicts
    result.per_file.append(
        {
            "file": loaded.path,
            "facts": new_facts,
            "probes": new_probes,
            "invalid": len(loaded.problems),
            "skipped_existing": skipped,
            "duplicates": duplicates,
            "split_conflicts": conflicts,
        }
    )


def _arrow(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows to an Arrow table, column by column (faster than ``Table.from_pylist``)."""
    return pa.table(
        {name: pa.array([row[name] for row in rows], type=schema.field(name).type) for name in schema.names},
        schema=schema,
    )


def _unique(rows: list[dict[str, Any]], key: str, seen: set[str]) -> list[dict[str, Any]]:
    """Rows whose id this ingest has not met yet (the first occurrence wins)."""
    out = []
    for row in rows:
        value = row[key]
        if value not in seen:
            seen.add(value)
            out.append(row)
    return out


def _metrics(result: IngestResult, started: float) -> dict[str, Any]:
    result.seconds = round(time.perf_counter() - started, 3)
    metrics = result.as_dict()
    metrics.pop("run_id")
    return metrics
