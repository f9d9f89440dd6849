"""What every loader shares: reading JSON Lines, JSON arrays, CSV and Parquet with exact locations,
checking fields, and building ``facts`` / ``probes`` rows.

A loader turns one input (a file or a folder) into :class:`LoadedFile` objects, one per file read:
the rows it yields and the :class:`Problem` of every row it refused. Nothing is written here:
``data.ingest`` decides, once every file has been read, whether problems stop the ingest or become
``rejections`` rows (``--skip-invalid``).

Locations are what a user needs to open the file at the fault: the 1-based line for JSON Lines,
CSV and JSON arrays (where an array item starts), the 1-based row for Parquet. The stored
``source_line`` of a row read from a JSON array is its item number (index + 1), as the schema says.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from lune.data.errors import InputError, LuneError
from lune.data.ids import content_id
from lune.data.key_span import key_span_for
from lune.data.records import fact_id

try:  # a dependency of Prefect; about twice as fast as the json module on JSON Lines
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover
    _fast_loads = None

PAYLOAD_LIMIT = 2000  # characters of a refused row kept in `rejections.payload`
PROGRESS_MIN_ROWS = 20_000  # files shorter than this read without a progress bar
_SURROGATE = re.compile("[\udc80-\udcff]")  # an undecodable byte, decoded with surrogateescape


class RowError(Exception):
    """A row-level problem raised while reading one row; the reader records it with the location."""

    def __init__(self, field: str | None, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


@dataclass(frozen=True)
class Problem:
    """One refused row (or file): where, which field, what is wrong, and the raw text."""

    source: str
    line: int | None
    field: str | None
    problem: str
    payload: str | None = None

    def error(self) -> InputError:
        return InputError(self.source, self.line, self.field, self.problem)


@dataclass
class LoadedFile:
    """What one file yielded: rows ready for the store, and the problems found."""

    path: str
    facts: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rows_read: int = 0  # rows met, good and bad


class Item(NamedTuple):
    """One parsed input row: its location, stored line number, object and raw text (for rejections)."""

    line: int  # where to look in the file (line, or row for Parquet)
    source_line: int  # what `source_line` stores (the line, or the item number of a JSON array)
    obj: Any
    raw: str


# -- reading ---------------------------------------------------------------------------------------


def require_path(path: str | Path, what: str = "file or folder") -> Path:
    path = Path(path)
    if not path.exists():
        raise LuneError(f"{path}: no such {what}")
    return path


def _decode(data: bytes) -> tuple[str, bool]:
    """Decode UTF-8 (a BOM is dropped). Undecodable bytes become lone surrogates (flag True), so
    the rows that hold them can be refused one by one, with the others kept."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="surrogateescape"), True


def _printable(raw: str) -> str:
    """A damaged row's text for `rejections.payload`: undecodable bytes shown as U+FFFD."""
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:PAYLOAD_LIMIT]


def _first_bad(text: str) -> int | None:
    """Index of the first undecodable byte in ``text`` (decoded with surrogateescape), if any."""
    match = _SURROGATE.search(text)
    return match.start() if match else None


def _bad_bytes(byte: int) -> str:
    return f"undecodable bytes (0x{byte:02x}): the file must be UTF-8"


def _progress(total: int, desc: str, enabled: bool):
    if not enabled or total < PROGRESS_MIN_ROWS:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rows", unit_scale=True, leave=False)


def read_jsonl(path: Path, problems: list[Problem], *, progress: bool = False) -> Iterator[Item]:
    """Objects of a JSON Lines file; blank lines are skipped, bad lines become problems."""
    source = str(path)
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.lstrip()[:1] == b"[":  # else every line of it would be refused, one by one
        problems.append(
            Problem(
                source,
                None,
                None,
                "this file is a JSON array, not JSON Lines (one object per "
                "line): rename it to .json, or write one object per line",
                "",
            )
        )
        return
    lines = data.split(b"\n")
    bar = _progress(len(lines), path.name, progress)
    for number, raw_bytes in enumerate(lines, start=1):
        if bar is not None and number % 5000 == 0:
            bar.update(5000)
        if not raw_bytes.strip():
            continue
        if _fast_loads is not None:
            # Fast path: orjson checks the UTF-8 and parses in one go; anything it refuses goes
            # through the standard decoder below, which gives the message (and accepts what the
            # json module accepts, e.g. NaN).
            try:
                obj = _fast_loads(raw_bytes)
            except ValueError:
                pass
            else:
                if isinstance(obj, dict):
                    yield Item(number, number, obj, raw_bytes.decode("utf-8"))
                    continue
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as err:
            raw = raw_bytes.decode("utf-8", errors="replace")
            problems.append(Problem(source, number, None, _bad_bytes(raw_bytes[err.start]), raw[:PAYLOAD_LIMIT]))
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            problems.append(
                Problem(source, number, None, f"malformed JSON ({err.msg} at column {err.colno})", raw[:PAYLOAD_LIMIT])
            )
            continue
        if not isinstance(obj, dict):
            problems.append(
                Problem(source, number, None, f"expected a JSON object, got {_json_type(obj)}", raw[:PAYLOAD_LIMIT])
            )
            continue
        yield Item(number, number, obj, raw)
    if bar is not None:
        bar.update(bar.total - bar.n)
        bar.close()


def read_json_array(path: Path, problems: list[Problem], *, progress: bool = False) -> Iterator[Item]:
    """Objects of a file holding one JSON array, each with the line where it starts.

    A file that is not a JSON array at all is one problem (nothing of it can be trusted).
    """
    source = str(path)
    text, damaged = _decode(path.read_bytes())
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "[":
        kind = "nothing" if pos >= len(text) else f"{text[pos]!r}"
        problems.append(
            Problem(source, _line_at(text, pos), None, f"expected a JSON array of objects, found {kind} at the start")
        )
        return
    items: list[tuple[int, Any, str]] = []
    pos = _skip_ws(text, pos + 1)
    try:
        if pos < len(text) and text[pos] == "]":
            pos += 1
        else:
            while True:
                start = pos
                obj, pos = decoder.raw_decode(text, pos)
                items.append((start, obj, text[start:pos]))
                pos = _skip_ws(text, pos)
                if pos < len(text) and text[pos] == ",":
                    pos = _skip_ws(text, pos + 1)
                    continue
                if pos < len(text) and text[pos] == "]":
                    pos += 1
                    break
                raise json.JSONDecodeError("expected ',' or ']' after an array item", text, pos)
        if _skip_ws(text, pos) < len(text):
            raise json.JSONDecodeError("extra data after the array", text, _skip_ws(text, pos))
    except json.JSONDecodeError as err:
        bad = _first_bad(text) if damaged else None
        if bad is not None and bad <= err.pos:
            problems.append(Problem(source, _line_at(text, bad), None, _bad_bytes(ord(text[bad]) - 0xDC00)))
        else:
            problems.append(Problem(source, err.lineno, None, f"malformed JSON ({err.msg} at column {err.colno})"))
        return
    bar = _progress(len(items), path.name, progress)
    line = 1
    last = 0
    for index, (start, obj, raw) in enumerate(items, start=1):
        line += text.count("\n", last, start)
        last = start
        if bar is not None and index % 5000 == 0:
            bar.update(5000)
        if not isinstance(obj, dict):
            problems.append(
                Problem(
                    source,
                    line,
                    None,
                    f"item {index}: expected a JSON object, got {_json_type(obj)}",
                    raw[:PAYLOAD_LIMIT],
                )
            )
            continue
        bad = _first_bad(raw) if damaged else None
        if bad is not None:
            problems.append(
                Problem(
                    source,
                    line + raw.count("\n", 0, bad),
                    _damaged_field(obj),
                    f"item {index}: {_bad_bytes(ord(raw[bad]) - 0xDC00)}",
                    _printable(raw),
                )
            )
            continue
        yield Item(line, index, obj, raw)
    if bar is not None:
        bar.update(bar.total - bar.n)
        bar.close()


def read_json_any(path: Path, problems: list[Problem], *, progress: bool = False) -> Iterator[Item]:
    """A ``.json`` file is either one JSON array or JSON Lines (TOFU's are JSON Lines): look first."""
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        return read_json_array(path, problems, progress=progress)
    return read_jsonl(path, problems, progress=progress)


def read_csv(path: Path, problems: list[Problem], *, progress: bool = False) -> Iterator[Item]:
    """Rows of a CSV (or, by extension, tab-separated) file with a header line, as dicts."""
    source = str(path)
    text, damaged = _decode(path.read_bytes())
    delimiter = "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as err:
        problems.append(Problem(source, 1, None, f"malformed CSV header: {err}"))
        return
    bad = _first_bad(",".join(header)) if damaged else None
    if bad is not None:
        problems.append(Problem(source, 1, None, f"header: {_bad_bytes(ord(','.join(header)[bad]) - 0xDC00)}"))
        return
    total = text.count("\n") if progress else 0
    bar = _progress(total, path.name, progress)
    start_line = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            problems.append(Problem(source, start_line, None, f"malformed CSV: {err}"))
            start_line = reader.line_num + 1
            continue
        line, start_line = start_line, reader.line_num + 1
        if bar is not None and line % 5000 == 0:
            bar.update(5000)
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        raw = delimiter.join(values)
        if len(values) != len(header):
            problems.append(
                Problem(
                    source,
                    line,
                    None,
                    f"expected {len(header)} columns (as in the header), got {len(values)}",
                    raw[:PAYLOAD_LIMIT],
                )
            )
            continue
        row = dict(zip(header, values))
        if damaged:
            name = _damaged_field(row)
            if name is not None:
                value = row[name]
                problems.append(
                    Problem(source, line, name, _bad_bytes(ord(value[_first_bad(value)]) - 0xDC00), _printable(raw))
                )
                continue
        yield Item(line, line, row, raw)
    if bar is not None:
        bar.update(bar.total - bar.n)
        bar.close()


def read_parquet(path: Path, problems: list[Problem], *, progress: bool = False) -> Iterator[Item]:
    """Rows of a Parquet file as dicts; the location is the 1-based row number."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        problems.append(Problem(str(path), None, None, f"cannot read as Parquet: {err}"))
        return
    for index, row in enumerate(table.to_pylist(), start=1):
        yield Item(index, index, row, "")


READERS: dict[str, Callable[..., Iterator[Item]]] = {
    ".jsonl": read_jsonl,
    ".ndjson": read_jsonl,
    ".json": read_json_any,
    ".csv": read_csv,
    ".tsv": read_csv,
    ".parquet": read_parquet,
    ".pq": read_parquet,
}


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _damaged_field(obj: Mapping[str, Any]) -> str | None:
    for name, value in obj.items():
        if (isinstance(value, str) and _SURROGATE.search(value)) or _SURROGATE.search(name):
            return name
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


# -- fields ----------------------------------------------------------------------------------------


def text_field(obj: Mapping[str, Any], column: str, *, required: bool = True) -> str | None:
    """The non-empty string at ``column`` (stripped); RowError names ``column`` when it is missing,
    empty or not a string. An optional field that is absent, null or blank gives None."""
    if column not in obj or obj[column] is None:
        if required:
            raise RowError(column, "missing" if column not in obj else "null where text is required")
        return None
    value = obj[column]
    if not isinstance(value, str):
        raise RowError(column, f"expected a string, got {_json_type(value)} ({_short(value)})")
    value = value.strip()
    if not value:
        if required:
            raise RowError(column, "empty")
        return None
    return value


def text_list_field(obj: Mapping[str, Any], name: str, *, required: bool = True) -> list[str]:
    """A list of non-empty strings (TOFU's ``perturbed_answer``)."""
    if name not in obj or obj[name] is None:
        if required:
            raise RowError(name, "missing")
        return []
    value = obj[name]
    if not isinstance(value, list):
        raise RowError(name, f"expected an array of strings, got {_json_type(value)} ({_short(value)})")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, str):
            raise RowError(f"{name}[{i}]", f"expected a string, got {_json_type(entry)} ({_short(entry)})")
        if not entry.strip():
            raise RowError(f"{name}[{i}]", "empty")
        out.append(entry.strip())
    if required and not out:
        raise RowError(name, "empty")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


# -- rows ------------------------------------------------------------------------------------------


def _extra(extra: Mapping[str, Any] | None) -> str | None:
    return json.dumps(extra, ensure_ascii=False, sort_keys=True, default=str) if extra else None


def fact_row(
    *,
    corpus: str,
    source_file: str,
    source_line: int | None,
    question: str,
    answer: str,
    split: str,
    subject: str | None = None,
    group_name: str | None = None,
    key_span: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``facts`` row. ``key_span`` is the dataset's span (source 'dataset'); without one it is
    derived from the question and answer (source 'derived', ``data.key_span``).

    The row matches ``data.records.Fact.to_row()`` (same columns and id), built directly because
    ingest makes hundreds of thousands of them.
    """
    span, span_source = key_span_for(question, answer, key_span)
    return {
        "fact_id": fact_id(corpus, question, answer),
        "corpus": corpus,
        "source_file": source_file,
        "source_line": source_line,
        "subject": subject,
        "question": question,
        "answer": answer,
        "key_span": span,
        "key_span_source": span_source,
        "split": split,
        "group_name": group_name,
        "extra": _extra(extra),
    }


def probe_row(
    *,
    corpus: str,
    kind: str,
    text: str,
    source_file: str,
    source_line: int | None,
    fact_id: str | None = None,
    subject: str | None = None,
    answer: str | None = None,
    attack_type: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``probes`` row; its id is ``data.records.Probe.probe_id``'s."""
    return {
        "probe_id": content_id("probe", corpus, kind, fact_id or subject, text),
        "fact_id": fact_id,
        "corpus": corpus,
        "subject": subject,
        "kind": kind,
        "text": text,
        "answer": answer,
        "attack_type": attack_type,
        "source_file": source_file,
        "source_line": source_line,
        "extra": _extra(extra),
    }


def load_file(
    path: Path,
    reader: Callable[..., Iterator[Item]],
    handle: Callable[[Item, LoadedFile], None],
    *,
    progress: bool = False,
) -> LoadedFile:
    """Read ``path`` with ``reader`` and run ``handle`` on every item; a RowError becomes a Problem at
    the item's location.

    ``handle`` appends the rows an item yields to the LoadedFile; it must raise before appending
    anything, so a refused row leaves nothing behind.
    """
    loaded = LoadedFile(str(path))
    row_errors = 0
    for item in reader(path, loaded.problems, progress=progress):
        loaded.rows_read += 1
        try:
            handle(item, loaded)
        except RowError as err:
            row_errors += 1
            raw = item.raw or json.dumps(item.obj, ensure_ascii=False, default=str)
            loaded.problems.append(Problem(loaded.path, item.line, err.field, err.problem, raw[:PAYLOAD_LIMIT]))
    loaded.rows_read += len(loaded.problems) - row_errors  # rows the reader refused before parsing them
    if loaded.rows_read == 0:
        loaded.problems.append(Problem(loaded.path, None, None, "the file held no rows (it is empty)", ""))
    return loaded
