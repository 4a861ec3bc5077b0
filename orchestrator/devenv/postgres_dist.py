"""Finding (and, as root on Debian, installing) the PostgreSQL server programs."""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sagaline.orchestrator.devenv.errors import DevEnvError, MissingToolError
from sagaline.orchestrator.devenv.progress import report, run_streaming

__all__ = [
    "PostgresBinaries",
    "RunAs",
    "ensure_postgres_binaries",
    "find_postgres_binaries",
    "run_as",
]

_DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"


@dataclass(frozen=True)
class PostgresBinaries:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` live, and their major version."""

    bin_dir: Path
    major: int

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)


@dataclass(frozen=True)
class RunAs:
    """The OS account that owns the cluster files and runs the server."""

    user: str
    uid: int
    gid: int

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` prefixed so that it runs as this account."""
        if self.is_current:
            return argv
        return ["runuser", "-u", self.user, "--", *argv]


def run_as() -> RunAs:
    """The current user, or ``postgres`` when running as root (initdb refuses root)."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)
    name = os.environ.get("SAGALINE_PG_OS_USER", "postgres")
    try:
        entry = pwd.getpwnam(name)
    except KeyError as exc:
        raise MissingToolError(
            f"running as root, but there is no '{name}' OS user to own the PostgreSQL cluster "
            "(install Debian's postgresql package or set SAGALINE_PG_OS_USER)"
        ) from exc
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def find_postgres_binaries() -> PostgresBinaries | None:
    """The newest server found under ``/usr/lib/postgresql/*/bin`` or on ``PATH``."""
    candidates: list[Path] = []
    explicit = os.environ.get("SAGALINE_PG_BIN")
    if explicit:
        candidates.append(Path(explicit))
    candidates.extend(
        sorted(Path("/").glob(_DEBIAN_GLOB.lstrip("/")), key=_major_of_path, reverse=True)
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bin_dir in candidates:
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            return PostgresBinaries(bin_dir, _major_of(bin_dir))
    return None


def ensure_postgres_binaries(*, install: bool = True) -> PostgresBinaries:
    """Find the server programs; as root on Debian/Ubuntu, ``apt-get install postgresql`` first."""
    found = find_postgres_binaries()
    if found is not None:
        return found
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise MissingToolError(
            "PostgreSQL server programs (initdb, pg_ctl) were not found; install the "
            "'postgresql' package (e.g. sudo apt-get install -y postgresql)"
        )
    with open(Path(tempfile.gettempdir()) / "sagaline-apt.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find_postgres_binaries()
        if found is None:
            _apt_install("postgresql")
            found = find_postgres_binaries()
    if found is None:
        raise MissingToolError("apt-get installed postgresql but initdb is still missing")
    return found


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", package],
    ):
        report("postgresql", f"{' '.join(argv)} (PostgreSQL is not installed)")
        code, tail = run_streaming(argv, _apt_line, env=env)
        if code != 0:
            raise DevEnvError(f"{' '.join(argv)} failed: {' | '.join(tail[-3:])}")
    report("postgresql", f"installed {package}", done=True)


def _apt_line(line: str) -> None:
    """Show apt's own steps: fetching, unpacking and setting up packages."""
    if line.startswith(("Get:", "Unpacking ", "Setting up ", "Reading package lists")):
        report("postgresql", line[:100])


def _major_of_path(bin_dir: Path) -> int:
    return _major_of(bin_dir)


def _major_of(bin_dir: Path) -> int:
    match = re.search(r"postgresql/(\d+)", str(bin_dir))
    if match:
        return int(match.group(1))
    result = subprocess.run(
        [str(bin_dir / "pg_ctl"), "--version"], capture_output=True, text=True, check=False
    )
    version = re.search(r"(\d+)", result.stdout)
    return int(version.group(1)) if version else 0
