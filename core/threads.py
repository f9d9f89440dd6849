"""How many torch threads a lune stage may use, so that workers sharing a machine never oversubscribe it.

Measured on 2 cores: teaching the embedded default took 93 s alone and 1,993 s beside one other
torch process (21 times slower, not 2): each process ran 2 OpenMP threads, and a parallel region
waits for its slowest thread, which waits for a core. A stage therefore takes, at its start::

    threads = LUNE_THREADS                          if set (the user's override), else
              (cores - busy) // workers, at least 1, at most OMP_NUM_THREADS if set

- ``cores``: the cores this process may run on (``os.sched_getaffinity``: a container, ``taskset``
  or a batch scheduler's cpuset), not the machine's count;
- ``busy``: cores kept busy by processes that are not lune workers, sampled from ``/proc/stat``
  over a fraction of a second (minus the CPU time of this process and the registered workers);
- ``workers``: lune processes doing torch work on this machine at the moment (each registers a
  file under ``$LUNE_WORKER_DIR``, default ``/tmp/lune-workers-<uid>``, while a stage runs), or
  more if the caller knows more are starting (``lune sweep`` passes its worker count).

The sizing happens when a stage starts; a competitor that starts later is not seen.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

OVERRIDE_ENV = "LUNE_THREADS"
REGISTRY_ENV = "LUNE_WORKER_DIR"
SAMPLE_SECONDS = 0.2
# Share of a core, over the sample, from which it counts as taken: a CPU-bound competitor shows
# 0.95-1.0, while a transient (Prefect's API server answering the flow run that starts the stage)
# showed up to about half a core in a 0.2 s sample; giving a stage's thread away for that halves it.
BUSY_CORE = 0.75

_lock = threading.Lock()
_depth = 0  # nested stages of one process keep the outermost stage's sizing


def plan_threads(
    cores: int, workers: int = 1, busy: float = 0.0, override: int | None = None, cap: int | None = None
) -> int:
    """The thread count of one worker: ``override`` if given, else ``(cores - busy cores) // workers``,
    at least 1 and at most ``cap``; a core counts as busy from BUSY_CORE of it (a CPU-bound competitor
    shows 0.95-1.0; a server answering a request, or a process starting, a fraction that comes and goes).

    >>> plan_threads(cores=2, workers=2)           # two sweep workers on 2 cores: one thread each
    1
    >>> plan_threads(cores=2, busy=0.97)           # one CPU-bound competitor: keep off its core
    1
    >>> plan_threads(cores=16, workers=3, busy=1.2)
    5
    """
    if override is not None:
        return max(1, override)
    free = cores - int(busy + 1 - BUSY_CORE)
    threads = max(1, free // max(1, workers))
    return min(threads, cap) if cap else threads


def usable_cores() -> set[int]:
    """The CPUs this process may run on (its affinity mask), e.g. {0, 1}."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def registry_dir() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or Path(tempfile.gettempdir()) / f"lune-workers-{os.getuid()}")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def live_workers(folder: Path | None = None) -> list[int]:
    """Pids of the lune workers registered in ``folder`` whose process still runs (stale files of
    killed processes are removed)."""
    folder = folder or registry_dir()
    alive = []
    for entry in folder.glob("*.pid") if folder.is_dir() else []:
        try:
            pid, started = entry.read_text().split()
            pid_n = int(pid)
        except (OSError, ValueError):
            continue
        if _start_time(pid_n) == started:
            alive.append(pid_n)
        else:
            entry.unlink(missing_ok=True)
    return sorted(alive)


def _cpu_ticks(cpus: Iterable[int]) -> tuple[int, int]:
    """(busy, total) clock ticks of ``cpus`` since boot, from /proc/stat."""
    wanted = {f"cpu{c}" for c in cpus}
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name in wanted:
            values = [int(v) for v in fields[:8]]
            idle = values[3] + values[4]  # idle + iowait
            total += sum(values)
            busy += sum(values) - idle
    return busy, total


def _process_ticks(pids: Iterable[int]) -> int:
    """User + system clock ticks of the processes ``pids`` (all their threads)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks


def external_busy(cpus: set[int], own: Iterable[int], seconds: float = SAMPLE_SECONDS) -> float:
    """Cores of ``cpus`` kept busy over ``seconds`` by processes other than ``own`` (0 where
    /proc is missing)."""
    own = list(own)
    try:
        busy0, total0 = _cpu_ticks(cpus)
        mine0 = _process_ticks(own)
        time.sleep(seconds)
        busy1, total1 = _cpu_ticks(cpus)
        mine1 = _process_ticks(own)
    except OSError:
        return 0.0
    if total1 <= total0:
        return 0.0
    others = max(0, (busy1 - busy0) - (mine1 - mine0))
    return len(cpus) * others / (total1 - total0)


def _descendants(pid: int) -> list[int]:
    """Pids of ``pid``'s child processes, recursively (none where psutil cannot tell)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _int_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        from lune.data.errors import LuneError

        raise LuneError(f"${name} must be a whole number of threads, not {value!r}") from None


def decide_threads(workers: int = 1, sample_seconds: float = SAMPLE_SECONDS) -> int:
    """The thread count for a stage starting now in this process (see the module's docstring)."""
    override = _int_env(OVERRIDE_ENV)
    if override is not None:
        return max(1, override)
    cpus = usable_cores()
    pids = live_workers()
    others = [p for p in pids if p != os.getpid()]
    # this process's own children (lune run's Prefect server) are part of this run, not competitors
    own = [os.getpid(), *_descendants(os.getpid()), *others]
    busy = external_busy(cpus, own, sample_seconds) if sample_seconds > 0 else 0.0
    return plan_threads(len(cpus), max(workers, len(others) + 1), busy, cap=_int_env("OMP_NUM_THREADS"))


def set_torch_threads(count: int) -> None:
    """Set torch's intra-op thread count, also after a vLLM CPU engine ran in this process.

    vLLM's CPU worker replaces ``torch.set_num_threads`` with a no-op that only logs a warning
    ("doesn't allow to use torch.set_num_threads after the thread binding"), for the life of the
    process; every later stage would then run at whatever count the engine left. The builtin it
    replaced is still ``torch._C.set_num_threads``.
    """
    import torch

    torch._C.set_num_threads(count)


@contextmanager
def kept_torch_threads() -> Iterator[int]:
    """Restore torch's thread count after the block (a vLLM CPU engine may change it)."""
    import torch

    before = torch.get_num_threads()
    try:
        yield before
    finally:
        set_torch_threads(before)


@contextmanager
def torch_threads(workers: int = 1, sample_seconds: float = SAMPLE_SECONDS) -> Iterator[int]:
    """Size torch's threads for the stage run inside the block, registered as a lune worker for
    its length; yields the count. ``workers``: lune workers known to run at once on this machine
    (this one included). Inside another such block (a stage of a sweep point) the outer sizing stays.

        >>> with torch_threads() as n:
        ...     train()
    """
    global _depth
    import torch

    with _lock:
        _depth += 1
        outer = _depth > 1
    if outer:
        try:
            yield torch.get_num_threads()
        finally:
            with _lock:
                _depth -= 1
        return
    folder = registry_dir()
    entry = folder / f"{os.getpid()}.pid"
    before = torch.get_num_threads()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        entry.write_text(f"{os.getpid()} {_start_time(os.getpid())}")
    except OSError:  # no registry: size from the cores and the load alone
        entry = None  # type: ignore[assignment]
    try:
        threads = decide_threads(workers, sample_seconds)
        set_torch_threads(threads)
        yield threads
    finally:
        set_torch_threads(before)
        if entry is not None:
            entry.unlink(missing_ok=True)
        with _lock:
            _depth -= 1
