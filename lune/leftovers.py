"""Prefect temporary servers left behind by a killed lune process, found and stopped at the next start.

A flow run without a configured Prefect API starts a temporary server: a ``uvicorn`` child process
that Prefect stops at interpreter exit. SIGKILL skips that exit, and the server lives on, adopted by
init. :func:`stop_orphaned_servers` finds such servers of this user (a temporary Prefect server whose
parent is gone) and stops them; the command line reports each on stderr.
"""

from __future__ import annotations

import os

import psutil

SERVER_APP = "prefect.server.api.server:create_app"


def orphaned_servers() -> list[psutil.Process]:
    """This user's temporary Prefect servers whose parent process is gone."""
    found = []
    for process in psutil.process_iter(["pid", "ppid", "cmdline", "uids"]):
        info = process.info
        if SERVER_APP not in (info["cmdline"] or []) or (info["uids"] and info["uids"].real != os.getuid()):
            continue
        try:
            if _orphaned(info["ppid"]) and process.environ().get("PREFECT__SERVER_EPHEMERAL") == "1":
                found.append(process)
        except psutil.Error:
            continue
    return found


def _orphaned(ppid: int | None) -> bool:
    """Is the parent gone: adopted by init (pid 1), or by a sub-reaper that is no Python process?
    (Prefect starts the server from the Python process that runs the flow: lune, pytest, a worker.)"""
    if not ppid or ppid == 1:
        return True
    try:
        return not any("python" in part.lower() for part in psutil.Process(ppid).cmdline()[:2])
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # not ours to inspect: leave its child alone
        return False


def stop_orphaned_servers(timeout: float = 5.0) -> list[str]:
    """Stop the servers :func:`orphaned_servers` finds (SIGTERM, then SIGKILL); describe each."""
    servers = orphaned_servers()
    stopped = []
    for server in servers:
        cmdline = server.info["cmdline"]
        port = cmdline[cmdline.index("--port") + 1] if "--port" in cmdline else "?"
        try:
            server.terminate()
        except psutil.NoSuchProcess:
            continue
        stopped.append(f"pid {server.pid}, port {port}")
    _, alive = psutil.wait_procs(servers, timeout=timeout)
    for server in alive:
        server.kill()
    return stopped
