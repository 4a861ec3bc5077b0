"""CPU time of the real processes a benchmark measures, read from ``/proc``.

``/proc/<pid>/stat`` fields 14-17 are the process's user and system time and
those of its reaped children, in clock ticks.  The broker and PostgreSQL are
found by the TCP port they listen on (``/proc/net/tcp*`` gives the socket's
inode, a ``/proc/<pid>/fd`` link names it); PostgreSQL's backends are
children of the postmaster, so its figure adds theirs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["CpuMeter", "cpu_seconds", "listener_pid"]

_TICK = float(os.sysconf("SC_CLK_TCK"))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # the command name (field 2) may hold spaces; everything after its ')' splits cleanly
    return raw[raw.rfind(")") + 2 :].split()


def _own_ticks(fields: list[str]) -> int:
    # after ')' the list starts at field 3 (state): utime is field 14, stime 15,
    # cutime 16, cstime 17
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


def cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (and, if asked, of its live children)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = _own_ticks(fields)
    if with_children:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            child = _stat_fields(int(entry))
            if child is not None and child[1] == str(pid):
                ticks += _own_ticks(child)
    return ticks / _TICK


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def listener_pid(port: int) -> int | None:
    """The pid of the process listening on TCP ``port`` on this machine, if visible."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return int(entry)
    return None


class CpuMeter:
    """CPU seconds of named processes between :meth:`mark` and :meth:`since`."""

    def __init__(self, pids: Mapping[str, int | None], children: frozenset[str]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.children = children
        self._marked: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {
            name: cpu_seconds(pid, with_children=name in self.children)
            for name, pid in self.pids.items()
        }

    def mark(self) -> None:
        self._marked = self._now()

    def since(self, per: int) -> dict[str, float]:
        """Milliseconds of CPU per unit (``per`` sagas) of each process since :meth:`mark`."""
        now = self._now()
        report = {
            name: round(1000 * (now[name] - self._marked.get(name, 0.0)) / max(1, per), 3)
            for name in now
        }
        report["total"] = round(sum(report.values()), 3)
        return report
