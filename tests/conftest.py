"""Shared fixtures: real Apache Kafka and PostgreSQL for every test.

Session services (resolution order, per service; see ``sagaline.orchestrator.devenv.provision``):

1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` from the environment, as they are;
2. testcontainers, when a Docker engine answers (``SAGALINE_TEST_DOCKER=0`` disables it);
3. private local processes on free ports, started by ``sagaline.orchestrator.devenv`` and torn
   down at the end of the session.

Kafka and PostgreSQL are started in the background, concurrently, as soon as
collection shows that a selected test needs them (it uses ``kafka_bootstrap`` or
``database_url``; an ``integration`` test using neither gets both); a run of unit
tests starts nothing.
Once resolved, both values are exported to ``os.environ`` before the first test, so
that code under test (``Settings.from_env()``), tests reading the variables directly
and subprocesses all see the same servers.

Security is on (``SAGALINE_TEST_SECURITY=0`` turns it off): the local servers, including
the chaos tests' private ones, use SASL/SCRAM-SHA-512 over TLS with the StandardAuthorizer
and scram-sha-256 passwords, and ``SAGALINE_KAFKA_*`` are exported too, so every client
built by ``sagaline.orchestrator.runtime.kafka_config`` authenticates (as ``admin``
unless a test picks a role principal; ``session_credentials`` holds the passwords).

The session makes an Ed25519 key per role principal (``admin``, ``client``,
``orchestrator``, ``worker``, ``relay``, ``auditor``, ``projection``, ``console``) in a
temporary keyring and exports ``SAGALINE_KEYS_DIR`` and ``SAGALINE_SIGNING=true``, so
every process signs as its role and verifies what it reads (the default, like TLS;
``SAGALINE_TEST_SIGNING=0``, or ``SAGALINE_TEST_SECURITY=0``, turns signing off;
docs/security.md).

Fixtures for everyone:

- ``kafka_bootstrap`` (session, str) and ``database_url`` (session, str);
- ``topic_prefix`` (function): unique per test, e.g. ``t-1a2b3c4d``; use it for topic
  names, consumer groups and transactional ids;
- ``create_topics`` (function): ``create_topics(names, partitions=1, config=None)``
  creates topics and waits until they have leaders; they are deleted after the test;
- ``kafka_admin`` (session): an ``AdminClient`` on ``kafka_bootstrap``;
- ``pg_schema`` (function): a fresh schema (name) in ``database_url``, dropped afterwards;
  ``pg_schema_url``: a URL whose connections use that schema as ``search_path``;
- ``fresh_database_url`` (function): a brand-new database, dropped afterwards.

For chaos tests only (each test gets servers of its own, which it may SIGKILL):

- ``private_kafka``: a started single-broker ``LocalKafka`` (``.kill()``, ``.restart()``);
- ``private_kafka_cluster``: a started 3-broker ``LocalKafka`` (RF 3, min ISR 2;
  ``.kill(i)``, ``.start_node(i)``);
- ``private_postgres``: a started ``LocalPostgres`` (``.kill()``, ``.restart(crash=True)``).
"""

from __future__ import annotations

import functools
import gc
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from psycopg import sql

from sagaline.orchestrator.devenv.credentials import StackCredentials
from sagaline.orchestrator.devenv.errors import DevEnvError
from sagaline.orchestrator.devenv.kafka import QUICK_JIT_ENV, LocalKafka
from sagaline.orchestrator.devenv.postgres import LocalPostgres
from sagaline.orchestrator.devenv.provision import (
    KAFKA_ENV,
    POSTGRES_ENV,
    SessionInfra,
    local_postgres_settings,
)
from sagaline.orchestrator.runtime.kafka_config import admin_config
from sagaline.orchestrator.runtime.signing import ensure_role_keys

_INFRA = pytest.StashKey[SessionInfra]()

_KAFKA_FIXTURES = {"kafka_bootstrap"}
_POSTGRES_FIXTURES = {"database_url"}
_INFRA_FIXTURES = _KAFKA_FIXTURES | _POSTGRES_FIXTURES

CreateTopics = Callable[..., list[str]]
#: what the session removes at its end (the temporary keyring)
_CLEANUPS: list[Callable[[], object]] = []
#: a watchdog for a test stuck where pytest-timeout's signal cannot reach (tests/backstop.py)
pytest_plugins = ("backstop",)


# -- session services ---------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_INFRA] = SessionInfra(os.environ)
    _on_stuck(config.stash[_INFRA].close)  # a stuck worker's servers end with it
    _export_signing_keys()
    # the dev stacks that tests start (`sagaline dev up` in a subprocess) boot their
    # brokers with the C1 compiler only, as the session's and the chaos tests' own do
    os.environ.setdefault(QUICK_JIT_ENV, "1")


def _export_signing_keys() -> None:
    """A session keyring with a key per role; signing on unless SAGALINE_TEST_SIGNING=0."""
    if "SAGALINE_KEYS_DIR" not in os.environ:
        keys = Path(tempfile.mkdtemp(prefix="sagaline-keys-")) / "keys"
        os.environ["SAGALINE_KEYS_DIR"] = str(ensure_role_keys(keys))
        _CLEANUPS.append(functools.partial(shutil.rmtree, keys.parent, ignore_errors=True))
    # on with security (SAGALINE_TEST_SECURITY=0 turns both off, as `dev up --insecure` does)
    default = os.environ.get("SAGALINE_TEST_SECURITY", "1")
    signing = os.environ.get("SAGALINE_TEST_SIGNING", default) != "0"
    os.environ.setdefault("SAGALINE_SIGNING", "true" if signing else "false")


@pytest.hookimpl(trylast=True)  # after `-m`/`-k` deselection: start only what remains
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.collectonly:
        return
    used: set[str] = set()
    # An integration test that requests neither fixture reads the environment
    # directly: it gets both servers.
    unspecific = False
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        used |= names
        if item.get_closest_marker("integration") and not names & _INFRA_FIXTURES:
            unspecific = True
    config.stash[_INFRA].prepare(
        kafka=unspecific or bool(used & _KAFKA_FIXTURES),
        postgres=unspecific or bool(used & _POSTGRES_FIXTURES),
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    infra = config.stash.get(_INFRA, None)
    if infra is not None:
        infra.close()
    while _CLEANUPS:
        _CLEANUPS.pop()()


@pytest.fixture(scope="session", autouse=True)
def _export_session_infra(pytestconfig: pytest.Config) -> None:
    """Export the session's servers to the environment once they are needed."""
    infra = pytestconfig.stash[_INFRA]
    if infra.kafka_prepared:
        os.environ.setdefault(KAFKA_ENV, infra.kafka_bootstrap())
        _export_security(infra)
    if infra.postgres_prepared:
        os.environ.setdefault(POSTGRES_ENV, infra.database_url())


@pytest.fixture(scope="session")
def kafka_bootstrap(pytestconfig: pytest.Config) -> str:
    """Bootstrap servers of the session's Kafka (env, Docker or local process)."""
    value = pytestconfig.stash[_INFRA].kafka_bootstrap()
    os.environ.setdefault(KAFKA_ENV, value)
    _export_security(pytestconfig.stash[_INFRA])
    return value


def _export_security(infra: SessionInfra) -> None:
    for key, value in infra.security_env().items():
        os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def session_credentials(pytestconfig: pytest.Config) -> StackCredentials | None:
    """The secured session's passwords and certificates (None when security is off)."""
    infra = pytestconfig.stash[_INFRA]
    return infra.credentials() if infra.secured else None


@pytest.fixture(scope="session")
def database_url(pytestconfig: pytest.Config) -> str:
    """URL of the session's PostgreSQL database (env, Docker or local process)."""
    value = pytestconfig.stash[_INFRA].database_url()
    os.environ.setdefault(POSTGRES_ENV, value)
    return value


# -- Kafka helpers ------------------------------------------------------------------


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses: ``t-<8 hex digits>``."""
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient(admin_config(kafka_bootstrap))


@pytest.fixture
def create_topics(kafka_admin: AdminClient) -> Iterator[CreateTopics]:
    """``create_topics(names, partitions=1, config=None, replication_factor=-1)``."""
    created: list[str] = []

    def create(
        names: str | Iterable[str],
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        replication_factor: int = -1,
    ) -> list[str]:
        wanted = [names] if isinstance(names, str) else list(names)
        specs = [
            NewTopic(name, partitions, replication_factor, config=dict(config or {}))
            for name in wanted
        ]
        for future in kafka_admin.create_topics(specs, operation_timeout=30).values():
            future.result(60)
        created.extend(wanted)
        _wait_for_leaders(kafka_admin, wanted, partitions)
        return wanted

    yield create
    if created:
        for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
            try:
                future.result(30)
            except Exception:  # cleanup is best effort
                continue


def _wait_for_leaders(admin: AdminClient, topics: list[str], partitions: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=5)
        ready = all(
            name in metadata.topics
            and len(metadata.topics[name].partitions) >= partitions
            and all(p.leader >= 0 for p in metadata.topics[name].partitions.values())
            for name in topics
        )
        if ready:
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics {topics} have no leaders after 30 s")


# -- PostgreSQL helpers -----------------------------------------------------------


@pytest.fixture
def pg_schema(database_url: str) -> Iterator[str]:
    """A new, empty schema ``t_<8 hex digits>`` in ``database_url``; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg_schema_url(database_url: str, pg_schema: str) -> str:
    """``database_url`` whose connections use ``pg_schema`` as their ``search_path``."""
    return with_search_path(database_url, pg_schema)


def with_search_path(url: str, schema: str) -> str:
    """Add ``options=-c search_path=<schema>`` to a PostgreSQL URL."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-c search_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@pytest.fixture
def fresh_database_url(database_url: str) -> Iterator[str]:
    """A brand-new database on the session's server; dropped (forcibly) afterwards."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(database_url)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# -- private, killable servers for chaos tests ----------------------------------------


def _private_dir(kind: str) -> Path:
    # Directly under the temp dir and world-traversable: PostgreSQL runs as its own user.
    path = Path(tempfile.mkdtemp(prefix=f"sagaline-chaos-{kind}-"))
    path.chmod(0o755)
    return path


@pytest.fixture
def private_kafka(session_credentials: StackCredentials | None) -> Iterator[LocalKafka]:
    """A single-broker Kafka of this test's own; SIGKILL and restart it at will."""
    base = _private_dir("kafka")
    _export_private_security(session_credentials)
    kafka = LocalKafka(base, quick_jit=True, credentials=session_credentials)
    undo = _on_stuck(kafka.kill_all)
    try:
        kafka.start()
        yield kafka
    finally:
        undo()
        _free_clients_while_up()
        kafka.kill_all()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def private_kafka_cluster(session_credentials: StackCredentials | None) -> Iterator[LocalKafka]:
    """A 3-broker Kafka (RF 3, min.insync.replicas 2) of this test's own."""
    base = _private_dir("kafka3")
    _export_private_security(session_credentials)
    kafka = LocalKafka(base, brokers=3, quick_jit=True, credentials=session_credentials)
    undo = _on_stuck(kafka.kill_all)
    try:
        kafka.start()
        yield kafka
    finally:
        undo()
        _free_clients_while_up()
        kafka.kill_all()
        shutil.rmtree(base, ignore_errors=True)


def _on_stuck(stop: Callable[[], object]) -> Callable[[], None]:
    """``backstop.on_stuck``, imported once pytest has loaded the plugin (a module
    import above would come first and stop pytest rewriting its asserts)."""
    from backstop import on_stuck

    return on_stuck(stop)


def _free_clients_while_up() -> None:
    """Free the test's leftover Kafka clients before their private broker stops.

    Some are freed only by the cyclic collector (an orchestrator's callbacks are bound
    methods of itself); freed later, after the broker is gone, one can block this
    worker inside librdkafka (``sagaline.orchestrator.runtime.release``).  A failed
    test's frames (and its clients) stay reachable from ``sys.last_traceback``.
    """
    sys.last_type = sys.last_value = sys.last_traceback = None
    gc.collect()


def _export_private_security(credentials: StackCredentials | None) -> None:
    """Private servers share the session's credentials: clients need the same variables."""
    if credentials is None:
        return
    os.environ.setdefault("SAGALINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    os.environ.setdefault("SAGALINE_KAFKA_CA", str(credentials.ca_file))
    os.environ.setdefault("SAGALINE_KAFKA_CREDENTIALS", str(credentials.kafka_users_file))
    os.environ.setdefault("SAGALINE_KAFKA_USER", "admin")


@pytest.fixture
def private_postgres(session_credentials: StackCredentials | None) -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this test's own; SIGKILL and restart it at will."""
    base = _private_dir("postgres")
    postgres = LocalPostgres(
        base, settings=local_postgres_settings(), credentials=session_credentials
    )
    undo = _on_stuck(postgres.kill)
    try:
        postgres.start()
        yield postgres
    finally:
        undo()
        try:
            postgres.stop("immediate")
        except DevEnvError:
            postgres.kill()
        shutil.rmtree(base, ignore_errors=True)
