"""Which process owns a ``running`` stage run, and whether that process still lives.

A run row records its process (pid, the process's start time, host) when it starts. A process
killed with SIGKILL, or lost with its machine, never closes its row; the next process that opens
the store for writing on the same host finds the row's process gone (no such pid, or the pid now
belongs to a process started later) and marks the run ``abandoned`` (``Store.close_abandoned_runs``).
A row of another host is left alone: its process cannot be checked from here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class RunOwner:
    pid: int
    pid_started: float  # the process's start time, epoch seconds (psutil's create_time)
    host: str


def current_owner() -> RunOwner:
    """This process, as recorded in the ``runs`` rows it starts."""
    pid = os.getpid()
    return RunOwner(pid, psutil.Process(pid).create_time(), socket.gethostname())


def owner_alive(pid: int | None, pid_started: float | None, host: str | None) -> bool:
    """Whether the process that started a run still runs (True when that cannot be checked: no
    pid recorded, or another host)."""
    if pid is None or host != socket.gethostname():
        return True
    try:
        process = psutil.Process(pid)
        started = process.create_time()
        if process.status() == psutil.STATUS_ZOMBIE:  # dead, not yet reaped by its parent
            return False
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # exists, but is not ours to inspect: assume it is the owner
        return True
    # A pid reused by a later process is not the owner (create_time has a resolution of about 10 ms).
    return pid_started is None or abs(started - pid_started) < 1.0
