"""Storage failures (a full disk, a folder that cannot be written) as errors a user can act on.

DuckDB reports them as ``Failed to commit: Could not write file "x.duckdb.wal": No space left on
device`` and the like, Python as an ``OSError`` with an errno; wherever in a stage they happen, the
command line turns them into one line that names the path and says what to do
(:func:`storage_error`). A failed commit stores nothing of its transaction, so what was committed
before is kept and the same command resumes.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

from lune.data.errors import LuneError

FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
_FULL_TEXT = ("no space left", "file too large", "disk quota")
_DENIED_TEXT = ("permission denied", "operation not permitted", "read-only file system")
_DUCKDB_PATH = re.compile(r'(?:file|directory) "([^"]+)"')


class StorageError(LuneError):
    """A file or folder that lune must write cannot be written."""


def storage_error(err: BaseException) -> StorageError | None:
    """The user-facing error for ``err`` (or an exception it was raised from) when it is a full disk
    or a folder that cannot be written; None for anything else."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _classify(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def _classify(err: BaseException) -> StorageError | None:
    text = str(err).lower()
    if isinstance(err, OSError) and err.errno is not None:
        full, denied = err.errno in FULL, err.errno in DENIED
        path = err.filename
    elif type(err).__module__.startswith(("duckdb", "_duckdb")):
        full, denied = any(t in text for t in _FULL_TEXT), any(t in text for t in _DENIED_TEXT)
        match = _DUCKDB_PATH.search(str(err))
        path = match.group(1) if match else None
    else:
        return None
    where = f"{path}: " if path else ""
    if full:
        return StorageError(
            f"{where}cannot write: the disk is full (or a file-size limit was reached). Free some space, or "
            "point --db / --out at a disk with room, then run the same command again: what was stored before "
            "is kept"
        )
    if denied:
        folder = Path(path).parent if path else "the folder"
        return StorageError(
            f"{where}cannot write: {folder} is read-only or not yours (DuckDB writes its log, <store>.wal, "
            "beside the store). Make the folder writable, or copy the store to a writable folder and point "
            "--db at the copy; to only read it, use `lune sql` or `lune stats`. Nothing was changed"
        )
    return None
