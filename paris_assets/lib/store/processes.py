"""Which process is this, and is a recorded one still running: host, pid and start time, so a reused pid (another
process started later under the same number) is never taken for the one recorded.

On Linux the start time is the kernel's own record, clock ticks since boot (/proc/<pid>/stat) with the boot id:
exact, and untouched by clock steps (NTP), which shift the wall-clock start time psutil derives. Elsewhere it is
psutil's create time, compared within a second."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def start_stamp(pid: int) -> str:
    """When process `pid` started, as text: `<ticks since boot>@<boot id>` on Linux, else `<create time>`."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists() and BOOT_ID.exists():
        fields = stat.read_text().rpartition(")")[2].split()  # after the command name, which may hold spaces
        return f"{fields[19]}@{BOOT_ID.read_text().strip()}"  # field 22 of stat: starttime
    return repr(psutil.Process(pid).create_time())


def this_process() -> dict[str, str]:
    """The identity recorded for a run when it starts."""
    pid = psutil.Process().pid
    return {"host": socket.gethostname(), "pid": str(pid), "started": start_stamp(pid)}


def same_process(pid: int, started: str) -> bool | None:
    """Whether the process now holding `pid` is the one recorded as `started` (start_stamp's text, or a psutil
    create time as older records hold); None when no live process holds that pid. An unusable record: False."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if "@" in started:
            return start_stamp(pid) == started
        return abs(proc.create_time() - float(started)) < 1e-3
    except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
        return None
    except ValueError:
        return False


def is_running(host: str, pid: str, started: str) -> bool | None:
    """True when that process still runs, False when it is gone (or its pid now belongs to a process started at
    another time), None when it ran on another host (nothing here can tell)."""
    if host != socket.gethostname():
        return None
    return bool(pid.isdigit() and same_process(int(pid), started))


def peak_rss_mb() -> float:
    """This process' peak RSS since its exec (VmHWM; ru_maxrss keeps the forking parent's peak on Linux)."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024
