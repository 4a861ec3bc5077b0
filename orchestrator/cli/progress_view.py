"""Progress on stderr, drawn with ``rich`` on a terminal and as plain lines otherwise.

* :class:`TaskProgress` shows the dev environment's slow steps (Maven download,
  PostgreSQL install, Kafka start): one spinner line per task on a terminal;
  elsewhere a line per change of step, at most one every two seconds per task.
* :class:`RecordProgress` shows how far ``audit`` and ``replay`` have read a
  journal: a bar with a count and an estimate, on a terminal only, never with
  ``--json``.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import ExitStack
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sagaline.orchestrator.devenv.progress import reporting

__all__ = ["RecordProgress", "TaskProgress"]

PLAIN_EVERY_S = 2.0


class TaskProgress:
    """Receives :func:`sagaline.orchestrator.devenv.progress.report` calls and shows them."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._last: dict[str, float] = {}
        self._stack = ExitStack()
        self._progress: Progress | None = None
        if self.console.is_terminal:
            self._progress = Progress(
                SpinnerColumn(finished_text="[green]✓"),
                TextColumn("[bold]{task.fields[name]:<10}"),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self.console,
            )

    def __call__(self, task: str, message: str, done: bool) -> None:
        with self._lock:
            if self._progress is not None:
                self._live(task, message, done)
                return
            now = time.monotonic()
            if done or now - self._last.get(task, 0.0) >= PLAIN_EVERY_S:
                self._last[task] = now
                print(f"{task}: {message}", file=sys.stderr, flush=True)

    def _live(self, task: str, message: str, done: bool) -> None:
        assert self._progress is not None
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(message, total=1, name=task)
        self._progress.update(self._tasks[task], description=message, completed=1 if done else 0)

    def __enter__(self) -> TaskProgress:
        if self._progress is not None:
            self._stack.enter_context(self._progress)
        self._stack.enter_context(reporting(self))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()


class RecordProgress:
    """A bar of journal records read (terminal only; silent with ``--json``)."""

    def __init__(self, what: str, *, enabled: bool, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.what = what
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if enabled and self.console.is_terminal:
            self._progress = Progress(
                TextColumn(f"{what}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("records"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )

    def callback(self, done: int, total: int) -> None:
        """``progress(done, total)`` of the journal reader (``total`` is an upper bound)."""
        if self._progress is None:
            return
        if self._task is None:
            self._task = self._progress.add_task(self.what, total=max(total, 1))
        self._progress.update(self._task, completed=done, total=max(total, done, 1))

    def __enter__(self) -> RecordProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
