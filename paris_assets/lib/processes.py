"""Which process is this, and is a recorded one still running: host, pid and start time, so a reused pid (another
process started later under the same number) is never taken for the one recorded."""

from __future__ import annotations

import socket

import psutil


def this_process() -> dict[str, str]:
    """The identity recorded for a run when it starts."""
    proc = psutil.Process()
    return {"host": socket.gethostname(), "pid": str(proc.pid), "started": repr(proc.create_time())}


def is_running(host: str, pid: str, started: str) -> bool | None:
    """True when that process still runs, False when it is gone (or its pid now belongs to a process started at
    another time), None when it ran on another host (nothing here can tell)."""
    if host != socket.gethostname():
        return None
    try:
        proc = psutil.Process(int(pid))
        return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - float(started)) < 1e-3
    except (psutil.NoSuchProcess, ValueError):
        return False
