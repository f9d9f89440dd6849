"""The Prefect task runner a flow's tasks run on: threads of this process, or Dask worker processes.

Generation batches (``generate.task_runner``) and sweep points (``sweep.task_runner``) both take it.
A local Dask cluster gets ``workers`` single-threaded processes (each sizes its own torch threads,
``core/threads.py``); ``address`` names a running scheduler instead.
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from lune.data.errors import LuneError


def make_task_runner(kind: str, workers: int, address: str | None = None, *, setting: str = "task_runner") -> Any:
    """``kind`` ``threads`` (``workers`` threads) or ``dask``; ``setting`` names the config key in errors."""
    if kind != "dask":
        return ThreadPoolTaskRunner(max_workers=workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise LuneError(f"{setting} dask needs the prefect-dask package (pip install prefect-dask)") from None
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    )
