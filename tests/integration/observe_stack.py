"""A real sagaline deployment for the metrics and tracing tests.

The orchestrator, a worker, the outbox relay, the projection and (optionally)
the console run as separate ``sagaline`` OS processes on real Kafka and
PostgreSQL, each serving Prometheus metrics on its own port; the demo's refund
sagas (``sagaline.sagas``) run through them.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from sagaline.consumers.migrations import migrate
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.console import add_user
from sagaline.orchestrator.demo.plan import DemoPlan, plan, seed
from sagaline.orchestrator.demo.procs import Cluster, ProcessSpec, sagaline_command
from sagaline.orchestrator.demo.watch import StateWatcher
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.sagas.tables import APP_SCHEMA_ENV, Tables, ensure_tables
from sagaline.schemas.state import SagaState

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

APP = "sagaline.sagas:REGISTRY"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> Samples:
    """Every sample ``/metrics`` on ``port`` serves, by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """``name``'s samples summed per value of ``label``."""
    out: dict[str, float] = {}
    for (n, ls), v in samples.items():
        if n == name:
            key = dict(ls).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


@dataclass
class Stack:
    settings: Settings
    names: TopicNames
    worker_schema: str
    tables: Tables
    ports: dict[str, int]
    cluster: Cluster
    log_dir: Path
    demo: DemoPlan | None = None
    events: list[str] = field(default_factory=list)

    def wait_for_metrics(self, timeout: float = 180.0) -> None:
        """Until every process answers on its metrics port."""
        deadline = time.monotonic() + timeout
        for name, port in self.ports.items():
            while True:
                self.cluster.check_alive()
                try:
                    scrape(port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{name} serves no metrics on {port}") from None
                    time.sleep(0.3)

    def logs(self) -> str:
        return "\n".join(self.cluster.log_tail(name, 25) for name in self.ports)


def _specs(
    names: TopicNames, worker_schema: str, ports: Mapping[str, int], users: Path | None
) -> list[ProcessSpec]:
    prefix = names.prefix
    common = ["--prefix", prefix, "--schema", worker_schema]
    specs = [
        ProcessSpec(
            "orchestrator",
            sagaline_command(
                "orchestrator",
                "run",
                "--app",
                APP,
                "--instance-id",
                f"{prefix}-o1",
                "--group",
                f"{prefix}-orch",
                "--prefix",
                prefix,
                "--metrics-port",
                str(ports["orchestrator"]),
            ),
        ),
        ProcessSpec(
            "worker",
            sagaline_command(
                "worker",
                "run",
                "--app",
                APP,
                "--group",
                f"{prefix}-workers",
                "--metrics-port",
                str(ports["worker"]),
                *common,
            ),
        ),
        ProcessSpec(
            "relay",
            sagaline_command(
                "relay",
                "run",
                "--poll-interval",
                "0.5",
                "--metrics-port",
                str(ports["relay"]),
                *common,
            ),
        ),
        ProcessSpec(
            "projection",
            sagaline_command(
                "projection",
                "run",
                "--name",
                f"{prefix}-projection",
                "--prefix",
                prefix,
                "--db-schema",
                worker_schema,
                "--metrics-port",
                str(ports["projection"]),
            ),
        ),
    ]
    if users is not None:
        specs.append(
            ProcessSpec(
                "console",
                sagaline_command(
                    "ui",
                    "--users",
                    str(users),
                    "--app",
                    APP,
                    "--port",
                    str(free_port()),
                    "--prefix",
                    prefix,
                    "--db-schema",
                    worker_schema,
                    "--state-dir",
                    str(users.parent),
                    "--metrics-port",
                    str(ports["console"]),
                ),
            )
        )
    return specs


@contextmanager
def running_stack(
    bootstrap: str,
    database_url: str,
    prefix: str,
    work_dir: Path,
    *,
    console: bool = True,
    env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """Topics, tables and the processes of one deployment; everything removed after."""
    names = TopicNames(prefix)
    ensure_topics(bootstrap, names, TopicLayout(partitions=2), create=True)
    tag = uuid.uuid4().hex[:8]
    worker_schema, app_schema = f"t_obs_{tag}", f"t_obsapp_{tag}"
    migrate(database_url, worker_schema)
    with psycopg.connect(database_url) as conn:
        ensure_tables(conn, app_schema)
    users: Path | None = None
    if console:
        users = work_dir / "users.toml"
        add_user(users, "olivia", "operator-password-1", "viewer", ["*"])
    process_names = ["orchestrator", "worker", "relay", "projection"] + (
        ["console"] if console else []
    )
    ports = {name: free_port() for name in process_names}
    full_env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "SAGALINE_TOPIC_PREFIX": prefix,
        APP_SCHEMA_ENV: app_schema,
        **(env or {}),
    }
    log_dir = work_dir / "logs"
    cluster = Cluster(env=full_env, log_dir=log_dir)
    settings = Settings(kafka_bootstrap_servers=bootstrap, database_url=database_url, topics=names)
    stack = Stack(settings, names, worker_schema, Tables(app_schema), ports, cluster, log_dir)
    try:
        for spec in _specs(names, worker_schema, ports, users):
            cluster.start(spec)
        yield stack
    finally:
        cluster.stop_all()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {worker_schema} CASCADE")
            conn.execute(f"DROP SCHEMA IF EXISTS {app_schema} CASCADE")


def run_refunds(
    stack: Stack,
    client: SagaClient,
    count: int,
    *,
    while_waiting: Callable[[dict[str, SagaState]], None] | None = None,
    start: Callable[[Callable[[], None]], None] | None = None,
    timeout: float = 180.0,
) -> dict[str, SagaState]:
    """Start ``count`` demo refunds, answer their approvals, wait until all are terminal.

    ``while_waiting`` sees the states once every refund that needs an approval
    waits for it (before any is answered); ``start`` wraps the starting (and
    the answering) of the sagas, e.g. in a span.
    """
    demo = plan(uuid.uuid4().hex[:6], refunds=count, research=0, enrichments=0)
    stack.demo = demo
    with psycopg.connect(stack.settings.database_url or "") as conn:
        seed(conn, stack.tables, demo)
    refunds = demo.of_kind("refund")

    def begin() -> None:
        for p in refunds:
            client.start(p.definition, p.data, saga_id=p.saga_id, check_existing=False)

    (start or (lambda f: f()))(begin)
    watcher = StateWatcher(stack.settings.kafka_bootstrap_servers, stack.names.state)
    try:
        asking = [p for p in refunds if p.action in ("approve", "reject", "timeout")]
        watcher.wait_until(
            [p.saga_id for p in asking],
            lambda s: bool(s.waits) or s.is_terminal,
            timeout=timeout,
            what="waiting for an approval",
            tick=stack.cluster.check_alive,
        )
        if while_waiting is not None:
            while_waiting(dict(watcher.states))

        def answer() -> None:
            for p in asking:
                state = watcher.get(p.saga_id)
                if state is None or state.is_terminal:
                    continue
                if p.action == "approve":  # bound: on the view the manager was shown
                    seen = next((w.shown_sha256 for w in state.waits), None)
                    client.approve(
                        p.saga_id, "manager_approval", by=p.by or "m", note="ok", seen_sha256=seen
                    )
                else:
                    client.reject(p.saga_id, "manager_approval", by=p.by or "m", note="no")

        (start or (lambda f: f()))(answer)
        ids = [p.saga_id for p in refunds]
        watcher.wait_until(
            ids,
            lambda s: s.is_terminal,
            timeout=timeout,
            what="terminal",
            tick=stack.cluster.check_alive,
        )
        return {i: s for i in ids if (s := watcher.get(i)) is not None}
    finally:
        watcher.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout:.0f}s")
        time.sleep(0.2)
