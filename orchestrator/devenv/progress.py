"""Progress of long set-up work (Maven download, PostgreSQL install, Kafka start).

The dev environment's slow steps call :func:`report` with a task name and
what is happening now; whoever shows progress (the ``sagaline dev`` commands
draw it with ``rich`` on a terminal, plain lines otherwise) installs a
reporter with :func:`reporting`.  Without one, reports go nowhere, so the
library stays silent inside tests and other programs.  Thread-safe: Kafka and
PostgreSQL start concurrently.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Reporter", "report", "reporting", "run_streaming"]

#: ``reporter(task, message)``; ``done=True`` marks the task finished.
Reporter = Callable[[str, str, bool], None]

_lock = threading.Lock()
_reporter: Reporter | None = None


def report(task: str, message: str, *, done: bool = False) -> None:
    """Tell the current reporter (if any) what ``task`` is doing."""
    with _lock:
        reporter = _reporter
    if reporter is not None:
        reporter(task, message, done)


@contextmanager
def reporting(reporter: Reporter) -> Iterator[None]:
    """Send every :func:`report` to ``reporter`` while the block runs."""
    global _reporter
    with _lock:
        previous, _reporter = _reporter, reporter
    try:
        yield
    finally:
        with _lock:
            _reporter = previous


def run_streaming(
    argv: list[str], on_line: Callable[[str], None], *, env: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    """Run ``argv``, calling ``on_line`` for each output line; return (exit code, last lines)."""
    tail: list[str] = []
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if not line:
                continue
            tail = [*tail[-19:], line]
            on_line(line)
        code = proc.wait()
    return code, tail
