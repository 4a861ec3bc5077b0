"""The web console beside the demo: a demo user, the ``sagaline ui`` process, its URL.

The console is a process of its own (``sagaline ui``), started like the
orchestrator and the workers; nothing in the demo imports it.  The demo
keeps one users file under ``.sagaline/`` with a user ``demo`` (role admin)
whose generated password sits in an owner-only file beside it: the demo
names that file and never prints the password.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sagaline.orchestrator.demo.procs import ProcessFailed, ProcessSpec, sagaline_command
from sagaline.orchestrator.devenv.ports import LOOPBACK, free_port

__all__ = ["DemoConsole", "demo_console"]

DEMO_USER = "demo"


@dataclass(frozen=True)
class DemoConsole:
    """How to reach the demo's console and how to start it again."""

    url: str
    users_file: Path
    password_file: Path
    spec: ProcessSpec
    again: str

    def wait_until_serving(self, tick: Callable[[], None], timeout: float = 60.0) -> None:
        """Block until the console's login page answers (``tick`` checks the processes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tick()
            try:
                with urllib.request.urlopen(self.url + "login", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise ProcessFailed(f"the web console did not answer at {self.url} within {timeout:.0f} s")

    def describe(self) -> str:
        return f"web console: {self.url} (user {DEMO_USER!r}, password in {self.password_file})"


def _ensure_demo_user(state_dir: Path) -> tuple[Path, Path]:
    """A users file with the demo user; the password in an owner-only file (made once)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    users = state_dir / "console-users.toml"
    password_file = state_dir / "console-demo-password"
    if users.exists() and password_file.exists():
        return users, password_file
    password = secrets.token_urlsafe(12)
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(password + "\n")
    command = sagaline_command(
        "ui", "add-user", "--users", str(users), DEMO_USER, "--role", "admin", "--password-stdin"
    )
    try:
        done = subprocess.run(
            command, input=password + "\n", text=True, capture_output=True, timeout=120
        )
    except subprocess.TimeoutExpired as exc:
        raise ProcessFailed(
            f"adding the console's demo user took over 120 s: {exc.stderr!r}"
        ) from exc
    if done.returncode != 0:
        raise ProcessFailed(f"adding the console's demo user failed: {done.stderr.strip()}")
    return users, password_file


def demo_console(state_dir: Path, prefix: str, db_schema: str) -> DemoConsole:
    """The console's process spec for one demo run, on a free loopback port."""
    users, password_file = _ensure_demo_user(state_dir)
    port = free_port()
    args = [
        "ui",
        "--users",
        str(users),
        "--app",
        "sagaline.sagas:REGISTRY",
        "--prefix",
        prefix,
        "--db-schema",
        db_schema,
        "--host",
        LOOPBACK,
    ]
    spec = ProcessSpec("console", sagaline_command(*args, "--port", str(port)))
    again = "sagaline " + " ".join(args) + " --port 8765"
    return DemoConsole(f"http://{LOOPBACK}:{port}/", users, password_file, spec, again)
