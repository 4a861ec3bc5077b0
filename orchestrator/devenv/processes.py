"""Signals and liveness checks for processes we started (by pid)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "children_of",
    "kill_tree",
    "pid_alive",
    "pid_owned_by",
    "run_concurrently",
    "stop_pid",
    "wait_pid_exit",
]


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live (non-zombie) process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    # The state is the first field after the parenthesised command name.
    state = stat.rpartition(")")[2].split()[:1]
    if state == ["Z"]:
        _reap(pid)
        return False
    return True


def pid_owned_by(pid: int, needle: str) -> bool:
    """True when ``pid`` is alive and its command line mentions ``needle`` (guards pid reuse)."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return needle.encode() in cmdline


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_pid_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is gone; True if it exited within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    _reap(pid)
    return not pid_alive(pid)


def stop_pid(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL. True if it stopped cleanly."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    if wait_pid_exit(pid, timeout):
        return True
    kill_tree(pid)
    return False


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from ``/proc``)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def kill_tree(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL ``pid`` and its direct children, and wait for ``pid`` to disappear."""
    children = children_of(pid)
    for target in (pid, *children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    wait_pid_exit(pid, timeout)
    for child in children:
        wait_pid_exit(child, timeout)


def run_concurrently(jobs: list[Callable[[], object]]) -> None:
    """Run ``jobs`` in threads, wait for all, then re-raise the first failure (if any)."""
    errors: list[BaseException] = []

    def run(job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
