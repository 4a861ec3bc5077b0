"""Kafka and PostgreSQL for a test session: explicit settings, Docker, or local processes.

Resolution order, per service:

1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` in the environment: used as they are;
2. otherwise, when a Docker engine answers (and ``SAGALINE_TEST_DOCKER`` is not ``0``):
   testcontainers (``apache/kafka``, ``postgres``);
3. otherwise: private local processes (:class:`LocalKafka`, :class:`LocalPostgres`) on
   free ports in a temporary directory, secured like ``sagaline dev up`` (SASL/SCRAM over
   TLS with the StandardAuthorizer, scram-sha-256 passwords) unless
   ``SAGALINE_TEST_SECURITY=0``; :meth:`SessionInfra.security_env` then holds the
   variables that let every client of the session (and its subprocesses) authenticate,
   as the ``admin`` principal unless a test chooses another.

Whatever is started here is stopped by :meth:`SessionInfra.close`. Services are started
in background threads as soon as :meth:`SessionInfra.prepare` learns they are needed, so
Kafka and PostgreSQL boot concurrently (and while pytest is still collecting).
"""

from __future__ import annotations

import enum
import functools
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from sagaline.orchestrator.devenv.credentials import ADMIN, StackCredentials
from sagaline.orchestrator.devenv.docker import docker_available
from sagaline.orchestrator.devenv.kafka import LocalKafka
from sagaline.orchestrator.devenv.postgres import LocalPostgres

__all__ = [
    "KAFKA_ENV",
    "POSTGRES_ENV",
    "SessionInfra",
    "Source",
    "choose_source",
    "local_postgres_settings",
]

KAFKA_ENV = "KAFKA_BOOTSTRAP_SERVERS"
POSTGRES_ENV = "DATABASE_URL"
DOCKER_SWITCH_ENV = "SAGALINE_TEST_DOCKER"
SECURITY_SWITCH_ENV = "SAGALINE_TEST_SECURITY"


class Source(enum.Enum):
    """Where a service for the test session comes from."""

    ENV = "env"
    DOCKER = "docker"
    LOCAL = "local"


def choose_source(explicit: str | None, docker_answers: Callable[[], bool]) -> Source:
    """Apply the resolution order to one service (``docker_answers`` is only called if needed)."""
    if explicit:
        return Source.ENV
    if docker_answers():
        return Source.DOCKER
    return Source.LOCAL


def local_postgres_settings() -> dict[str, str]:
    """Server settings for throw-away test clusters.

    ``fsync=off`` only risks data on an operating-system crash; a killed server still
    recovers everything it acknowledged, so chaos tests keep their meaning.
    """
    return {"fsync": "off", "full_page_writes": "off"}


class _Stoppable(Protocol):
    def stop(self) -> None: ...


class SessionInfra:
    """Resolves, starts (lazily, concurrently) and finally stops the session's services."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        docker_probe: Callable[[], bool] = docker_available,
        root: Path | None = None,
    ) -> None:
        self._env = dict(env)
        self._docker_probe = docker_probe
        self._docker: bool | None = None
        self._root = root
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sagaline-infra")
        self._kafka: Future[str] | None = None
        self._postgres: Future[str] | None = None
        self._stoppers: list[Callable[[], None]] = []
        self._credentials: StackCredentials | None = None
        self._kafka_secured = False
        self.sources: dict[str, Source] = {}

    # -- resolution --------------------------------------------------------------

    def _docker_answers(self) -> bool:
        if self._env.get(DOCKER_SWITCH_ENV, "1") == "0":
            return False
        if self._docker is None:
            self._docker = self._docker_probe()
        return self._docker

    def _workdir(self, name: str) -> Path:
        with self._lock:
            return self._root_dir() / name

    @property
    def secured(self) -> bool:
        """True when the servers this object starts are secured."""
        return self._env.get(SECURITY_SWITCH_ENV, "1") != "0"

    def credentials(self) -> StackCredentials:
        """The session's passwords and certificates (created on first use)."""
        with self._lock:
            if self._credentials is None:
                directory = self._root_dir() / "secrets"
                self._credentials = StackCredentials.ensure(directory)
            return self._credentials

    def _root_dir(self) -> Path:
        if self._root is None:
            # Directly under the temp dir: the postgres OS user must be able to reach it.
            self._root = Path(tempfile.mkdtemp(prefix="sagaline-test-"))
            self._root.chmod(0o755)
            self._stoppers.append(functools.partial(shutil.rmtree, self._root, ignore_errors=True))
        return self._root

    def security_env(self) -> dict[str, str]:
        """The variables of a secured session Kafka (empty when it is not secured)."""
        self.kafka_bootstrap()
        if not self._kafka_secured or self._credentials is None:
            return {}
        return {
            "SAGALINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SAGALINE_KAFKA_CA": str(self._credentials.ca_file),
            "SAGALINE_KAFKA_CREDENTIALS": str(self._credentials.kafka_users_file),
            "SAGALINE_KAFKA_USER": ADMIN,
        }

    def prepare(self, *, kafka: bool, postgres: bool) -> None:
        """Start resolving the services the session needs, in the background."""
        with self._lock:
            if kafka and self._kafka is None:
                self._kafka = self._pool.submit(self._resolve_kafka)
            if postgres and self._postgres is None:
                self._postgres = self._pool.submit(self._resolve_postgres)

    @property
    def kafka_prepared(self) -> bool:
        """True once Kafka is being (or has been) resolved."""
        return self._kafka is not None

    @property
    def postgres_prepared(self) -> bool:
        """True once PostgreSQL is being (or has been) resolved."""
        return self._postgres is not None

    def kafka_bootstrap(self) -> str:
        """The session's bootstrap servers (starting Kafka now if it is not under way)."""
        self.prepare(kafka=True, postgres=False)
        assert self._kafka is not None
        return self._kafka.result()

    def database_url(self) -> str:
        """The session's database URL (starting PostgreSQL now if it is not under way)."""
        self.prepare(kafka=False, postgres=True)
        assert self._postgres is not None
        return self._postgres.result()

    def _resolve_kafka(self) -> str:
        explicit = self._env.get(KAFKA_ENV)
        source = choose_source(explicit, self._docker_answers)
        self.sources["kafka"] = source
        if explicit:
            return explicit
        if source is Source.DOCKER:
            from sagaline.orchestrator.devenv.containers import KafkaInDocker

            container = KafkaInDocker()
            self._register(container)
            container.start()
            return container.bootstrap_servers
        creds = self.credentials() if self.secured else None
        local = LocalKafka(self._workdir("kafka"), quick_jit=True, credentials=creds)
        self._kafka_secured = creds is not None
        self._stoppers.append(local.kill_all)
        local.start()
        return local.bootstrap_servers

    def _resolve_postgres(self) -> str:
        explicit = self._env.get(POSTGRES_ENV)
        source = choose_source(explicit, self._docker_answers)
        self.sources["postgres"] = source
        if explicit:
            return explicit
        if source is Source.DOCKER:
            from sagaline.orchestrator.devenv.containers import PostgresInDocker

            container = PostgresInDocker()
            self._register(container)
            container.start()
            return container.url
        local = LocalPostgres(
            self._workdir("postgres"),
            settings=local_postgres_settings(),
            credentials=self.credentials() if self.secured else None,
        )
        self._stoppers.append(lambda: local.stop("immediate"))
        local.start()
        return local.url

    def _register(self, service: _Stoppable) -> None:
        with self._lock:
            self._stoppers.append(service.stop)

    def close(self) -> None:
        """Stop everything this object started (newest first) and delete its directories."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            stoppers, self._stoppers = self._stoppers, []
        for stop in reversed(stoppers):
            try:
                stop()
            except Exception:  # noqa: S112 - best effort: keep stopping the rest
                continue
