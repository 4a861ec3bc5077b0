"""``sagaline orchestrator run`` as a restartable subprocess, for the tests that SIGKILL it.

Each start is a new incarnation with its own log file
(``orch-<instance>-<start>.log`` in ``log_dir``); the app module is found on a
PYTHONPATH of this directory and the repository root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from sagaline.orchestrator.config import Settings

INTEGRATION = Path(__file__).resolve().parent
ROOT = INTEGRATION.parent.parent

#: a killed incarnation's partitions move to another member within seconds
SESSION_TIMEOUT_ARGS = ("--session-timeout-ms", "6000")


class OrchestratorProcess:
    """One ``sagaline orchestrator run --app <app>`` subprocess (restartable).

    ``app`` is the ``module:attribute`` spec, ``instance`` the instance id; the
    consumer group is ``<prefix>-orch``.  ``extra_args`` follow the connection
    arguments, ``env`` is added to this process's environment at every start.
    """

    def __init__(
        self,
        settings: Settings,
        app: str,
        log_dir: Path,
        instance: str = "a",
        *,
        extra_args: Sequence[str] = SESSION_TIMEOUT_ARGS,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings, self.app, self.log_dir, self.instance = settings, app, log_dir, instance
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        """The log of the current (latest) incarnation."""
        return self.log_dir / f"orch-{self.instance}-{self.starts}.log"

    def command(self) -> list[str]:
        prefix = self.settings.topics.prefix
        return [
            *(sys.executable, "-m", "sagaline.orchestrator.cli", "orchestrator", "run"),
            *("--app", self.app, "--instance-id", self.instance),
            *("--group", f"{prefix}-orch", "--prefix", prefix),
            *("--bootstrap", self.settings.kafka_bootstrap_servers),
            *self.extra_args,
        ]

    def start(self, env: Mapping[str, str] | None = None) -> None:
        """Start a new incarnation; ``env`` is added for this one only."""
        self.starts += 1
        full_env = {**os.environ, **self.env, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join([str(INTEGRATION), str(ROOT)])
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(), env=full_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    def log_text(self) -> str:
        path = self.log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_assigned(self, timeout: float = 60.0) -> None:
        """Block until this incarnation owns partitions (its restore done); fail with the
        log's tail when it exits first or the time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " assigned [" in self.log_text():
                return
            assert self.running(), (
                f"orchestrator {self.instance} exited before it got partitions:\n" + self.log_tail()
            )
            time.sleep(0.05)
        raise AssertionError(
            f"orchestrator {self.instance} never got partitions:\n" + self.log_tail()
        )

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the running incarnation; one that already exited by itself fails the test."""
        assert self.proc is not None, f"orchestrator {self.instance} was never started"
        code = self.proc.poll()
        assert code is None, (
            f"orchestrator {self.instance} exited by itself with {code} before the kill:\n"
            + self.log_tail()
        )
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``: the exit code of a clean stop, or of an
        incarnation that had already exited; None when it had to be killed (or never ran)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_if_running()
            return None

    def kill_if_running(self) -> None:
        """For a ``finally``: no incarnation outlives the test."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
