"""The Prefect task runner a flow's tasks run on: threads of this process, or Dask worker processes.

Generation batches (``generate.task_runner``) and sweep points (``sweep.task_runner``) both take it.
A local Dask cluster gets ``workers`` single-threaded processes (each sizes its own torch threads,
``core/threads.py``) that report to this process's Prefect API; ``address`` names a running
scheduler instead (its workers report where their own environment says).
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
    cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    return DaskTaskRunner(cluster_kwargs={**cluster, "env": worker_environment()})


def worker_environment() -> dict[str, str]:
    """The environment a local Dask worker process needs: the Prefect API this process reports to.

    Without it a worker in a run on a temporary Prefect server (no ``PREFECT_API_URL``) starts a
    temporary server of its own, one more process per worker competing for the cores, and the
    points' flow runs land there instead of in the server the user watches.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        server = SubprocessASGIServer()  # this process's temporary server (a singleton), when one runs
        url = server.api_url if server.running else None
    return {"PREFECT_API_URL": url} if url else {}
