"""Is the process that began a run still alive? Used to mark runs whose writer died (kill -9, OOM, power cut)."""

from __future__ import annotations

import os
import socket


def host_name() -> str:
    return socket.gethostname()


def process_start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid` (Linux /proc, clock ticks since boot), or None where unknown.

    Stored beside the pid so that a recycled pid is not mistaken for the original writer."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after the last ')' are fixed.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 overall: starttime
    except (IndexError, ValueError):
        return None


def is_alive(pid: int | None, start_ticks: int | None) -> bool:
    """True when `pid` on this host still runs and (when known) started at `start_ticks`."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if start_ticks is not None:
        now = process_start_ticks(pid)
        if now is not None and now != start_ticks:
            return False  # the pid was recycled by a different process
    return True
