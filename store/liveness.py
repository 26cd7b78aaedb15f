"""Who owns a running run, and whether that process is still there.

A run records the process that drives it: host name, pid and the pid's start time (so a
reused pid is not mistaken for the original process), and a heartbeat the owner renews
every :data:`HEARTBEAT_INTERVAL_S`. A reader decides a ``running`` run is gone:

* on the owner's machine (same host name and boot): at once, when the pid is dead, a
  zombie, or now belongs to a process started at another time;
* from anywhere else: when the last heartbeat is older than :data:`STALE_AFTER`.

Only the standard library is used: the start time comes from ``/proc/<pid>/stat``
(field 22, clock ticks since boot) together with ``/proc/sys/kernel/random/boot_id``.
Where there is no ``/proc`` (macOS), liveness falls back to ``kill(pid, 0)``, which
cannot tell a reused pid apart.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

__all__ = [
    "HEARTBEAT_INTERVAL_S",
    "STALE_AFTER",
    "ProcessIdentity",
    "is_gone",
    "process_alive",
    "process_start",
]

#: How often an owner renews its runs' heartbeat.
HEARTBEAT_INTERVAL_S = 10.0
#: A run whose heartbeat is older than this reads as interrupted from another machine.
STALE_AFTER = timedelta(seconds=60)

_PROC = Path("/proc")

#: ``alive(pid, start)``: whether that process still runs (injectable in tests).
AliveProbe = Callable[[int, "str | None"], bool]


@cache
def _boot_id() -> str | None:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """The start stamp of a live process: ``"<boot id>/<start ticks>"``.

    Returns:
        None when the process does not exist, is a zombie, or ``/proc`` is unavailable.
    """
    boot = _boot_id()
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return f"{boot}/{fields[19]}" if boot else fields[19]


def process_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid``, started at ``start`` (None: unknown), still runs here."""
    if _PROC.joinpath("self", "stat").exists():
        current = process_start(pid)
        return current is not None and (start is None or current == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OSError:
        return False
    return True


def _boot_of(start: str | None) -> str | None:
    return start.partition("/")[0] if start and "/" in start else None


@dataclass(frozen=True)
class ProcessIdentity:
    """A process: host name, pid and start stamp (see :func:`process_start`)."""

    host: str
    pid: int
    start: str | None

    @classmethod
    def current(cls) -> ProcessIdentity:
        """This process (computed per call, so a forked child is itself)."""
        pid = os.getpid()
        return cls(host=socket.gethostname(), pid=pid, start=process_start(pid))

    def same_machine(self, host: str | None, start: str | None) -> bool:
        """Whether a process recorded as (host, start) ran on this machine since its boot."""
        return host == self.host and _boot_of(start) == _boot_of(self.start)


def is_gone(
    status: str,
    host: str | None,
    pid: int | None,
    start: str | None,
    last_seen: datetime,
    *,
    now: datetime,
    here: ProcessIdentity,
    alive: AliveProbe = process_alive,
) -> bool:
    """Whether a run should read as ``interrupted`` rather than ``running``.

    Args:
        status: The stored status; only ``running`` can be gone.
        host, pid, start: The owner the run records (None for runs older than owners).
        last_seen: Its last heartbeat (or, lacking one, its creation time).
        now: The reader's clock.
        here: The reading process.
        alive: Probe of a local pid (see :func:`process_alive`).
    """
    if status != "running":
        return False
    if pid is not None and here.same_machine(host, start):
        return not alive(pid, start)
    return now - last_seen > STALE_AFTER
