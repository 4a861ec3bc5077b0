"""The demo's process supervisor: orchestrator, workers and relay as separate OS processes.

Each process is the real ``sagaline`` command (``orchestrator run``,
``worker run``, ``relay run``), started with the demo's settings in its
environment and its output in a log file.  :meth:`Cluster.kill` sends
SIGKILL (no shutdown code runs); :meth:`Cluster.restart` starts the same
command again (the orchestrator keeps its instance id, so the new instance
fences the killed one's transactions).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sagaline.orchestrator.core.errors import SagalineError

__all__ = ["Cluster", "ProcessFailed", "ProcessSpec", "sagaline_command"]


class ProcessFailed(SagalineError):
    """A demo process exited on its own."""


def sagaline_command(*args: str) -> list[str]:
    """``sagaline <args>`` run by this Python interpreter (works without the console script)."""
    return [
        sys.executable,
        "-c",
        "import sys; from sagaline.orchestrator.cli import main; sys.exit(main())",
        *args,
    ]


@dataclass(frozen=True)
class ProcessSpec:
    """A named long-running command."""

    name: str
    argv: Sequence[str]


@dataclass
class _Running:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    log: IO[bytes]
    starts: int = 1


@dataclass
class Cluster:
    """Starts, kills and restarts the demo's processes; stops them all at the end."""

    env: Mapping[str, str]
    log_dir: Path
    cwd: Path = field(default_factory=Path.cwd)
    _procs: dict[str, _Running] = field(default_factory=dict)
    kills: list[str] = field(default_factory=list)

    def start(self, spec: ProcessSpec) -> None:
        """Start ``spec`` (its output appends to ``<log_dir>/<name>.log``)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{spec.name}.log").open("ab")
        popen = subprocess.Popen(
            list(spec.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            cwd=self.cwd,
        )
        previous = self._procs.get(spec.name)
        starts = previous.starts + 1 if previous is not None else 1
        if previous is not None:
            previous.log.close()
        self._procs[spec.name] = _Running(spec, popen, log, starts)

    def pid(self, name: str) -> int:
        return self._procs[name].popen.pid

    def kill(self, name: str) -> int:
        """SIGKILL ``name``; return the killed pid."""
        running = self._procs[name]
        pid = running.popen.pid
        running.popen.send_signal(signal.SIGKILL)
        running.popen.wait(timeout=10)
        self.kills.append(name)
        return pid

    def restart(self, name: str) -> int:
        """Start ``name`` again with the same command; return the new pid."""
        self.start(self._procs[name].spec)
        return self.pid(name)

    def check_alive(self) -> None:
        """Raise :class:`ProcessFailed` when a process exited on its own."""
        for name, running in self._procs.items():
            code = running.popen.poll()
            if code is not None:
                tail = self.log_tail(name)
                raise ProcessFailed(f"{name} exited with code {code}; last log lines:\n{tail}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def starts(self) -> dict[str, int]:
        """How many times each process was started."""
        return {name: r.starts for name, r in self._procs.items()}

    def stop_all(self, grace: float = 15.0) -> dict[str, int | None]:
        """SIGTERM every process, wait up to ``grace`` seconds, SIGKILL the rest; exit codes."""
        for running in self._procs.values():
            if running.popen.poll() is None:
                running.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes: dict[str, int | None] = {}
        for name, running in self._procs.items():
            left = max(0.1, deadline - time.monotonic())
            try:
                codes[name] = running.popen.wait(timeout=left)
            except subprocess.TimeoutExpired:
                running.popen.kill()
                running.popen.wait(timeout=10)
                codes[name] = None
            running.log.close()
        return codes
