"""The storm's fleet: orchestrators, workers and relays as real ``sagaline`` subprocesses.

Each :class:`FleetProcess` is one restartable process.  :meth:`FleetProcess.kill`
sends SIGKILL and restarts it under the same instance id (a static member takes
its partitions back); a process found exited without having been killed is an
*unexpected exit*: it is counted, its log tail kept, and it is restarted so that
the storm goes on (the invariant ``unexpected_exits == 0`` then fails).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sagaline.orchestrator.chaos.storm_saga import DSN_ENV, SCHEMA_ENV

__all__ = ["Fleet", "FleetProcess", "FleetSpec", "Kind", "snapshot_code"]

Kind = Literal["orchestrator", "worker", "relay"]
_APP = "sagaline.orchestrator.chaos.storm_saga:registry"
#: the log line each kind writes once its SIGTERM handler is in place
_READY: dict[str, str] = {
    "orchestrator": "sagaline.orchestrator.runtime.engine",
    "worker": "consuming",
    "relay": "relay connected",
}


@dataclass(frozen=True)
class FleetSpec:
    """Where the fleet connects and how many processes of each kind run."""

    bootstrap: str
    dsn: str
    prefix: str
    schema: str
    log_dir: Path
    orchestrators: int = 3
    workers: int = 3
    relays: int = 2
    #: a directory holding a ``sagaline`` package to run instead of the installed
    #: one (a copy of the code taken at start: edits made during a long storm
    #: never reach restarted processes)
    code: Path | None = None


def _argv(kind: Kind, spec: FleetSpec, instance: str) -> list[str]:
    base = [sys.executable, "-m", "sagaline.orchestrator.cli"]
    conn = ["--bootstrap", spec.bootstrap, "--prefix", spec.prefix]
    db = ["--database-url", spec.dsn, "--schema", spec.schema]
    if kind == "orchestrator":
        return [
            *base,
            "orchestrator",
            "run",
            "--app",
            _APP,
            "--instance-id",
            instance,
            "--group",
            f"{spec.prefix}-orch",
            "--session-timeout-ms",
            "6000",
            "--log-level",
            "INFO",
            *conn,
        ]
    if kind == "worker":
        return [
            *base,
            "worker",
            "run",
            "--app",
            _APP,
            "--group",
            f"{spec.prefix}-workers",
            "--instance-id",
            instance,
            "--concurrency",
            "8",
            "--no-migrate",
            *conn,
            *db,
        ]
    return [*base, "relay", "run", "--poll-interval", "0.5", *conn, *db]


@dataclass
class FleetProcess:
    """One restartable ``sagaline`` subprocess."""

    kind: Kind
    instance: str
    spec: FleetSpec
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    unexpected: list[str] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.spec.log_dir / f"{self.kind}-{self.instance}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        env = dict(os.environ)
        env[SCHEMA_ENV] = self.spec.schema
        env[DSN_ENV] = self.spec.dsn
        if self.spec.code is not None:
            env["PYTHONPATH"] = str(self.spec.code)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                _argv(self.kind, self.spec, self.instance),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check(self) -> None:
        """Count and restart an incarnation that exited without being killed."""
        if self.proc is None or self.proc.poll() is None:
            return
        tail = self.log_path.read_text(errors="replace")[-1500:]
        self.unexpected.append(f"{self.kind} {self.instance} exited {self.proc.returncode}: {tail}")
        self.start()

    def kill(self) -> None:
        """SIGKILL the running incarnation and start the next one at once."""
        self.check()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.kills += 1
        self.start()

    def ready(self) -> bool:
        """Whether the running incarnation got past its start-up (it logged the line that
        follows installing its SIGTERM handler): a process restarted by the last kills of a
        storm may still be importing, and SIGTERM would end it before it could stop."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        return _READY[self.kind] in text

    def stop(self, timeout: float = 30.0, ready_timeout: float = 120.0) -> int | None:
        """SIGTERM once started; the exit code (``None`` when it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            self.check()
        deadline = time.monotonic() + ready_timeout
        while not self.ready() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


def snapshot_code(target: Path) -> Path:
    """Copy the running ``sagaline`` package (its Python sources and data files, not
    the repository around it) to ``target/sagaline``; ``target``."""
    import shutil

    import sagaline

    source = Path(sagaline.__file__).resolve().parent
    package = target / "sagaline"
    package.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*_cache")
    for sub in ("orchestrator", "schemas", "consumers", "sagas"):
        shutil.copytree(source / sub, package / sub, ignore=ignore, dirs_exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.suffix in (".py", ".typed"):
            shutil.copy2(item, package / item.name)
    return target


class Fleet:
    """Every process of the storm."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.processes: list[FleetProcess] = []
        for kind, count in (
            ("orchestrator", spec.orchestrators),
            ("worker", spec.workers),
            ("relay", spec.relays),
        ):
            for i in range(count):
                self.processes.append(FleetProcess(kind, f"{kind[0]}{i + 1}", spec))  # type: ignore[arg-type]

    def of(self, kind: Kind) -> list[FleetProcess]:
        return [p for p in self.processes if p.kind == kind]

    def start(self) -> None:
        for p in self.processes:
            p.start()

    def check(self) -> None:
        for p in self.processes:
            p.check()

    def stop(self) -> dict[str, int | None]:
        """Stop every process (SIGTERM); their exit codes by name."""
        return {f"{p.kind}:{p.instance}": p.stop() for p in self.processes}

    def kills(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.processes:
            out[p.kind] = out.get(p.kind, 0) + p.kills
        return out

    def unexpected_exits(self) -> list[str]:
        return [line for p in self.processes for line in p.unexpected]
