"""A backstop for a test that pytest-timeout cannot stop (a pytest plugin of this suite).

pytest-timeout's SIGALRM only breaks into Python code: a test blocked inside a C
call (freeing a librdkafka client whose broker is gone, librdkafka#4519) hung a CI
run at 942 of 945 tests until CI's own limit, with no trace of where.

So each test is also watched from a thread.  At its pytest-timeout limit plus
:data:`GRACE_S`, the watchdog prints the test's name and every thread's stack to
the session's stderr, stops the servers this process started (its Kafka and
PostgreSQL would otherwise outlive it on a 2-core machine: :func:`on_stuck`, then
SIGKILL to every process below it) and ends the process.
A test that holds the GIL in C would stop that thread too: ``faulthandler``'s own
watchdog (no GIL needed) prints the stacks and ends the process 30 s later.

Under xdist (``--dist loadfile``, docs/adr/0022) the controller then reports the
test as crashed, starts a new worker and queues the unfinished tests of its file
again, the crashed one first.  The first crash of a test counts as a rerun ("R",
"1 rerun" in the summary); a second crash of the same test, or a crashed test that
never passes afterwards (the run stopped at ``--max-worker-restart``), fails the run.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from sagaline.orchestrator.devenv.processes import children_of

#: past the test's own timeout: it is stuck where pytest-timeout's signal cannot reach
GRACE_S = 120.0
#: after the watchdog thread's deadline: faulthandler's, for a thread holding the GIL
_LAST_RESORT_S = 30.0

_STDERR = pytest.StashKey[int]()
#: what stops the servers of this process before a stuck one ends (see :func:`on_stuck`)
_ON_STUCK: list[Callable[[], object]] = []


def on_stuck(stop: Callable[[], object]) -> Callable[[], None]:
    """Have ``stop`` run (best effort) before a stuck worker ends: servers that are
    not its children (PostgreSQL, daemonised by ``pg_ctl``) would outlive it.
    Returns what takes it back (when the server is stopped the ordinary way)."""
    _ON_STUCK.append(stop)
    return lambda: _ON_STUCK.remove(stop) if stop in _ON_STUCK else None


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STDERR] = os.dup(2)  # capture is suspended while plugins configure


def _limit(item: pytest.Item) -> float:
    """The test's pytest-timeout limit (marker, --timeout, PYTEST_TIMEOUT, ini); 0: none."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0] or 0)
    given = item.config.getoption("timeout", None) or os.environ.get("PYTEST_TIMEOUT")
    return float(given if given is not None else item.config.getini("timeout") or 0)


class _Watchdog:
    """One thread that ends the process when the test it watches outlives its deadline."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Condition()
        self._deadline: float | None = None
        self._test = ""
        threading.Thread(target=self._run, name="test-backstop", daemon=True).start()

    def arm(self, test: str, seconds: float) -> None:
        with self._lock:
            self._test, self._deadline = test, time.monotonic() + seconds
            self._lock.notify()

    def disarm(self) -> None:
        with self._lock:
            self._deadline = None
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._deadline is None or time.monotonic() < self._deadline:
                    wait = None if self._deadline is None else self._deadline - time.monotonic()
                    self._lock.wait(wait)
                test = self._test
            self._end(test)

    def _end(self, test: str) -> None:
        os.write(self._fd, f"\n*** {test}: stuck past its timeout; stacks follow ***\n".encode())
        faulthandler.dump_traceback(file=self._fd, all_threads=True)
        for stop in reversed(_ON_STUCK):
            with contextlib.suppress(Exception):
                stop()
        for pid in _descendants(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        os._exit(1)


def _descendants(pid: int) -> list[int]:
    found, todo = [], children_of(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children_of(child))
    return found


_WATCHDOG: list[_Watchdog] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    limit = _limit(item)
    if limit <= 0:  # no timeout asked for: no backstop either
        yield
        return
    fd = item.config.stash[_STDERR]
    if not _WATCHDOG:
        _WATCHDOG.append(_Watchdog(fd))
    _WATCHDOG[0].arm(item.nodeid, limit + GRACE_S)
    faulthandler.dump_traceback_later(limit + GRACE_S + _LAST_RESORT_S, exit=True, file=fd)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        _WATCHDOG[0].disarm()


# -- in the controlling process (xdist) ------------------------------------------

#: tests whose worker crashed, and those of them that passed afterwards
_CRASHED: set[str] = set()
_RECOVERED: set[str] = set()


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report: pytest.TestReport, sched: object) -> None:
    """The first crash of a test counts as a rerun when the scheduler queues it again
    (the file schedulers do; ``load`` and ``worksteal`` drop it: a failure there)."""
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    if crashitem not in _CRASHED and isinstance(sched, LoadScopeScheduling):
        report.outcome = "rerun"  # type: ignore[assignment]
    _CRASHED.add(crashitem)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid in _CRASHED and (
        (report.when == "call" and report.passed) or (report.when == "setup" and report.skipped)
    ):
        _RECOVERED.add(report.nodeid)


def pytest_report_teststatus(
    report: pytest.TestReport | pytest.CollectReport,
) -> tuple[str, str, str] | None:
    if report.outcome == "rerun":  # type: ignore[comparison-overlap]
        return "rerun", "R", "RERUN (its worker crashed; it runs again)"
    return None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    lost = sorted(_CRASHED - _RECOVERED)
    if lost and session.exitstatus == pytest.ExitCode.OK:
        sys.stderr.write(f"\ncrashed and never passed afterwards: {', '.join(lost)}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
