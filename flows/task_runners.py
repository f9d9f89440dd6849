"""The Prefect task runner a flow's tasks run on: threads of this process, or Dask worker processes.

Generation batches (``generate.task_runner``) and sweep points (``sweep.task_runner``) both take it.
A local Dask cluster gets ``workers`` single-threaded processes (each sizes its own torch threads,
``core/threads.py``) that report to this process's Prefect API, without the environment Dask's
nanny gives its workers by default (``NANNY_ENV_UNSET``); ``address`` names a running scheduler
instead (its workers report where their own environment says, and run with what their own Dask
config sets: docs/sweep.md says what to unset there).
"""

from __future__ import annotations

import os
from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from lune.data.errors import LuneError

# What Dask's nanny sets in every worker it spawns (``distributed.nanny.pre-spawn-environ``), and
# also in the process that starts a local cluster. lune sizes torch's threads itself, and a
# glibc trim threshold of 64 KiB made a 1-thread training loop 1.6 times slower on 2 cores
# (bench/threads.py, BENCHMARKS.md): two sweep workers took 3 times as long a point as one.
NANNY_ENV_UNSET = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def local_cluster(**cluster_kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` whose workers' environment lacks ``NANNY_ENV_UNSET``."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{name}": None for name in NANNY_ENV_UNSET}):
        return LocalCluster(**cluster_kwargs)


def nanny_env_warning() -> str | None:
    """A warning for a worker running with the nanny's malloc trim threshold (a worker of a cluster
    lune did not start), else None."""
    value = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    if not value:
        return None
    return (
        f"this worker runs with MALLOC_TRIM_THRESHOLD_={value} (Dask's nanny sets it): torch training was "
        "1.6 times slower with 65536; start the workers without it (docs/sweep.md, Dask on many machines)"
    )


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
    return DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs={**cluster, "env": worker_environment()})


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
