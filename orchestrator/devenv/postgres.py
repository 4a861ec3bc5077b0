"""A private PostgreSQL cluster as a local process: initdb, start, stop, SIGKILL, restart.

Layout under ``base_dir`` (which must be reachable by the server's OS user)::

    <base>/pgdata/        the cluster (owned by the server's OS user, mode 0700)
    <base>/run/           unix socket and server.log
    <base>/cluster.json   port and database name, so the same directory restarts the same server

As root the files belong to the ``postgres`` OS user and the programs run through
``runuser`` (``initdb`` refuses to run as root). The server listens on 127.0.0.1 and
its own socket directory only. With ``credentials`` (``sagaline dev up``, the test
session) every login needs the ``postgres`` password (scram-sha-256); the URL names
the owner-only libpq password file (``?passfile=``) instead of holding the password.
Without, authentication is ``trust`` (``dev up --insecure``).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import sql

from sagaline.orchestrator.devenv.credentials import (
    POSTGRES_USER,
    StackCredentials,
    write_private,
)
from sagaline.orchestrator.devenv.errors import DevEnvError, StartupError
from sagaline.orchestrator.devenv.ports import LOOPBACK, ensure_port_free, free_port
from sagaline.orchestrator.devenv.postgres_dist import (
    PostgresBinaries,
    RunAs,
    ensure_postgres_binaries,
    run_as,
)
from sagaline.orchestrator.devenv.processes import kill_tree, pid_owned_by, wait_pid_exit
from sagaline.orchestrator.devenv.progress import report
from sagaline.orchestrator.devenv.readiness import wait_for_postgres

__all__ = ["DEFAULT_DATABASE", "LocalPostgres", "reachable_by"]

DEFAULT_DATABASE = "sagaline"
_CLUSTER_FILE = "cluster.json"


def reachable_by(path: Path, uid: int, gid: int) -> bool:
    """True when every existing ancestor of ``path`` can be traversed by ``uid``/``gid``."""
    if uid == 0:
        return True
    for ancestor in [path, *path.parents]:
        if not ancestor.exists():
            continue
        info = ancestor.stat()
        if info.st_uid == uid:
            allowed = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid == gid:
            allowed = bool(info.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(info.st_mode & stat.S_IXOTH)
        if not allowed:
            return False
    return True


class LocalPostgres:
    """One PostgreSQL server on ``127.0.0.1:<port>`` with the database ``database``."""

    def __init__(
        self,
        base_dir: Path,
        *,
        port: int | None = None,
        database: str = DEFAULT_DATABASE,
        settings: Mapping[str, str] | None = None,
        binaries: PostgresBinaries | None = None,
        credentials: StackCredentials | None = None,
    ) -> None:
        self.base_dir = base_dir.resolve()
        self.credentials = credentials
        self._binaries = binaries
        self._owner: RunAs | None = None
        self.settings = dict(settings or {})
        saved = self._load()
        self.port = port or (saved[0] if saved else 0) or free_port()
        self.database = saved[1] if saved and database == DEFAULT_DATABASE else database

    # -- layout ---------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "pgdata"

    @property
    def run_dir(self) -> Path:
        return self.base_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "server.log"

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/<database>``."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        url = f"postgresql://{POSTGRES_USER}@{LOOPBACK}:{self.port}/{database}"
        if self.credentials is not None:
            url += f"?passfile={self.credentials.pgpass_file}"
        return url

    @property
    def binaries(self) -> PostgresBinaries:
        if self._binaries is None:
            self._binaries = ensure_postgres_binaries()
        return self._binaries

    @property
    def owner(self) -> RunAs:
        if self._owner is None:
            self._owner = run_as()
        return self._owner

    @property
    def version(self) -> int:
        return self.binaries.major

    def _load(self) -> tuple[int, str] | None:
        path = self.base_dir / _CLUSTER_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        return int(raw["port"]), str(raw["database"])

    def _save(self) -> None:
        payload = {
            "port": self.port,
            "database": self.database,
            "secured": self.credentials is not None,
        }
        (self.base_dir / _CLUSTER_FILE).write_text(json.dumps(payload), encoding="utf-8")

    def pid(self) -> int | None:
        """The postmaster's pid if it runs (from ``postmaster.pid``)."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text(encoding="ascii").split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return None
        # The postmaster's command line names its data directory; a stale file whose
        # pid now belongs to another process does not count.
        return pid if pid_owned_by(pid, str(self.data_dir)) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> float:
        """initdb if needed, start the server, create the database; returns seconds taken."""
        started = time.monotonic()
        if self.pid() is None:
            _ = self.binaries  # installs PostgreSQL (and its OS user) when absent
            ensure_port_free(self.port)
            self._prepare_dirs()
            if not (self.data_dir / "PG_VERSION").is_file():
                self._initdb()
            else:
                self._check_security_mode()
            self._write_config()
            self._save()
            report("postgresql", f"starting the server on port {self.port}")
            self._pg_ctl("start", "-w", "-t", str(int(timeout)), "-l", str(self.log_file))
        wait_for_postgres(self.url_for("postgres"), timeout=timeout, liveness=self._liveness)
        self.create_database(self.database)
        seconds = time.monotonic() - started
        report("postgresql", f"ready on port {self.port} in {seconds:.1f} s", done=True)
        return seconds

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """``pg_ctl stop -m <mode>`` (``smart``, ``fast`` or ``immediate``)."""
        pid = self.pid()
        if pid is None:
            return
        self._pg_ctl("stop", "-m", mode, "-w", "-t", str(int(timeout)))
        wait_pid_exit(pid, 10.0)

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (a crash; the next start runs recovery)."""
        pid = self.pid()
        if pid is None:
            return
        kill_tree(pid)
        # The server refuses to start while the old pid exists, even as a zombie that
        # our parent-less postmaster leaves until init reaps it; wait, then drop the lock file.
        deadline = time.monotonic() + 10.0
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def restart(self, *, crash: bool = False, timeout: float = 90.0) -> float:
        """Stop fast (or SIGKILL when ``crash``) and start again; returns seconds to ready."""
        if crash:
            self.kill()
        else:
            self.stop()
        return self.start(timeout=timeout)

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE name`` unless it exists."""
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    # -- helpers ---------------------------------------------------------------

    def _liveness(self) -> str | None:
        if self.pid() is None:
            return f"postgres exited during start-up: {_tail(self.log_file)}"
        return None

    def _prepare_dirs(self) -> None:
        owner = self.owner
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not owner.is_current:
            self.base_dir.chmod(0o755)
            if not reachable_by(self.base_dir, owner.uid, owner.gid):
                raise DevEnvError(
                    f"the '{owner.user}' OS user cannot reach {self.base_dir}; "
                    "choose a data directory outside private home directories"
                )
        for path, mode in ((self.data_dir, 0o700), (self.run_dir, 0o755)):
            path.mkdir(exist_ok=True)
            if not owner.is_current:
                os.chown(path, owner.uid, owner.gid)
            path.chmod(mode)

    def _check_security_mode(self) -> None:
        path = self.base_dir / _CLUSTER_FILE
        if not path.is_file():
            return
        was = bool(json.loads(path.read_text(encoding="utf-8")).get("secured", False))
        if was != (self.credentials is not None):
            before, now = ("secured", "insecure") if was else ("insecure", "secured")
            raise DevEnvError(
                f"the PostgreSQL in {self.base_dir} was created {before} and cannot start "
                f"{now}; run `sagaline dev down --purge` first (its data is lost)"
            )

    def _initdb(self) -> None:
        argv = [
            self.binaries.tool("initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            POSTGRES_USER,
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]
        if self.credentials is None:
            self._run([*argv, "--auth=trust"], "initdb")
            return
        # the password reaches initdb through a file only the server's OS user can read
        pwfile = self.run_dir / ".initdb-password"
        write_private(pwfile, self.credentials.postgres_password + "\n")
        if not self.owner.is_current:
            os.chown(pwfile, self.owner.uid, self.owner.gid)
        try:
            self._run([*argv, "--auth=scram-sha-256", f"--pwfile={pwfile}"], "initdb")
        finally:
            pwfile.unlink(missing_ok=True)

    def _write_config(self) -> None:
        settings = {
            "port": str(self.port),
            "listen_addresses": LOOPBACK,
            "unix_socket_directories": str(self.run_dir),
            "max_connections": "200",
            "shared_buffers": "128MB",
            "logging_collector": "off",
            **self.settings,
        }
        text = "# Written by sagaline (orchestrator/devenv/postgres.py)\n" + "".join(
            f"{key} = {_quote(value)}\n" for key, value in settings.items()
        )
        conf = self.data_dir / "sagaline.conf"
        conf.write_text(text, encoding="utf-8")
        main_conf = self.data_dir / "postgresql.conf"
        include = "include_if_exists = 'sagaline.conf'\n"
        current = main_conf.read_text(encoding="utf-8")
        if include not in current:
            main_conf.write_text(current + include, encoding="utf-8")
        if not self.owner.is_current:
            os.chown(conf, self.owner.uid, self.owner.gid)

    def _pg_ctl(self, *args: str) -> None:
        self._run([self.binaries.tool("pg_ctl"), "-D", str(self.data_dir), *args], "pg_ctl")

    def _run(self, argv: list[str], what: str) -> None:
        result = subprocess.run(
            self.owner.command(argv),
            capture_output=True,
            text=True,
            check=False,
            cwd=self.run_dir if self.run_dir.is_dir() else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if result.returncode != 0:
            detail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            raise StartupError(f"{what} failed: {' | '.join(detail)} ({_tail(self.log_file)})")


def _quote(value: str) -> str:
    """A postgresql.conf value: any setting may be single-quoted."""
    return "'" + value.replace("'", "''") + "'"


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no server log)"
    return " | ".join(text[-lines:]) or "(empty server log)"
