"""The real processes of the end-to-end benchmarks and the tail that watches them.

:class:`Stack` starts ``sagaline orchestrator run``, ``sagaline worker run``
and ``sagaline relay run`` as subprocesses over fresh topics and a fresh
PostgreSQL schema, exactly as a user starts them; :class:`Tail` reads the
tasks, replies and state topics read_committed and records, per saga, when
each record became visible (``time.time()``) and its Kafka CreateTime.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from sagaline.consumers.migrations import migrate
from sagaline.orchestrator.bench.proc_cpu import CpuMeter, listener_pid
from sagaline.orchestrator.bench.run import Proc
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.kafka_config import admin_config, reader_config
from sagaline.orchestrator.runtime.snapshots import TERMINAL_HEADER
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.codec import default_codec
from sagaline.schemas.replies import REPLY_TYPES, StepHeartbeat

__all__ = ["Seen", "Stack", "Tail"]

APP = "sagaline.orchestrator.bench.e2e_sagas:registry"


@dataclass
class Seen:
    """What the tail saw of one saga: (visible at, CreateTime) per record, in order."""

    tasks: list[tuple[float, float]] = field(default_factory=list)
    replies: list[tuple[float, float]] = field(default_factory=list)
    states: list[float] = field(default_factory=list)
    terminal: float | None = None


class Tail:
    """One read_committed reader of the tasks, replies and state topics."""

    def __init__(self, settings: Settings, partitions: int, fetch_wait_ms: int = 100) -> None:
        names = settings.topics
        self._kind = {names.tasks: "tasks", names.replies: "replies", names.state: "state"}
        self.consumer = Consumer(
            reader_config(
                settings.kafka_bootstrap_servers,
                f"bench-e2e-tail-{uuid.uuid4().hex}",
                extra={"enable.partition.eof": False, "fetch.wait.max.ms": fetch_wait_ms},
            )
        )
        self.consumer.assign(
            [TopicPartition(t, p, OFFSET_END) for t in self._kind for p in range(partitions)]
        )
        self._codec = default_codec()
        self.lock = threading.Condition()
        self.seen: dict[str, Seen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # poll waits for the first record only (consume(n, t) would wait for n or t)
            first = self.consumer.poll(0.1)
            if first is None:
                continue
            batch = [first, *self.consumer.consume(999, 0)]
            now = time.time()
            with self.lock:
                for m in batch:
                    self._record(m, now)
                self.lock.notify_all()

    def _record(self, m: object, now: float) -> None:
        key, value = m.key(), m.value()  # type: ignore[attr-defined]
        if m.error() is not None or key is None or value is None:  # type: ignore[attr-defined]
            return
        seen = self.seen.setdefault(key.decode(), Seen())
        kind = self._kind.get(m.topic() or "")  # type: ignore[attr-defined]
        created = m.timestamp()[1] / 1000.0  # type: ignore[attr-defined]
        if kind == "tasks":
            seen.tasks.append((now, created))
        elif kind == "replies":
            if not isinstance(self._codec.decode(value, REPLY_TYPES), StepHeartbeat):
                seen.replies.append((now, created))
        else:
            seen.states.append(now)
            if (TERMINAL_HEADER, b"true") in (m.headers() or []):  # type: ignore[attr-defined]
                seen.terminal = now

    def wait_terminal(self, ids: Sequence[str], timeout: float) -> float:
        """Block until every saga of ``ids`` is terminal; when the last became so."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                done = [self.seen[i].terminal for i in ids if i in self.seen]
                if len(done) == len(ids) and all(t is not None for t in done):
                    return max(t for t in done if t is not None)
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = len(ids) - sum(1 for t in done if t is not None)
                    raise TimeoutError(f"{missing} sagas not terminal after {timeout:g}s")
                self.lock.wait(min(left, 0.2))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


def _port(address: str) -> int | None:
    try:
        return urlsplit(f"//{address.split(',')[0]}").port
    except ValueError:
        return None


class Stack:
    """Fresh topics and schema; orchestrator, worker and relay subprocesses."""

    def __init__(self, bootstrap: str, dsn: str, *, partitions: int, concurrency: int) -> None:
        self.prefix = f"bench-e2e-{uuid.uuid4().hex[:8]}"
        self.schema = f"bench_e2e_{uuid.uuid4().hex[:8]}"
        self.bootstrap, self.dsn, self.partitions = bootstrap, dsn, partitions
        self.settings = Settings(
            kafka_bootstrap_servers=bootstrap, database_url=dsn, topics=TopicNames(self.prefix)
        )
        ensure_topics(bootstrap, self.settings.topics, TopicLayout(partitions))
        migrate(dsn, self.schema)
        self.workdir = Path(tempfile.mkdtemp(prefix="sagaline-bench-e2e-"))
        self.stats_file = self.workdir / "orchestrator-stats.json"
        conn = ["--bootstrap", bootstrap, "--prefix", self.prefix]
        db = ["--database-url", dsn, "--schema", self.schema]
        cli = "sagaline.orchestrator.cli"
        self.procs = {
            "orchestrator": Proc(
                [cli, "orchestrator", "run", "--app", APP, "--instance-id", "o1",
                 "--group", f"{self.prefix}-orch", "--log-level", "WARNING",
                 "--stats-file", str(self.stats_file), *conn,
                 "--database-url", dsn, "--local-schema", self.schema],
                self.workdir / "orchestrator.log",
            ),
            "worker": Proc(
                [cli, "worker", "run", "--app", APP, "--instance-id", "w1",
                 "--group", f"{self.prefix}-workers", "--concurrency", str(concurrency),
                 *conn, *db],
                self.workdir / "worker.log",
            ),
            "relay": Proc([cli, "relay", "run", *conn, *db], self.workdir / "relay.log"),
        }  # fmt: skip
        self.tail = Tail(self.settings, partitions)

    def start(self) -> None:
        for proc in self.procs.values():
            proc.start()

    def pid(self, name: str) -> int | None:
        proc = self.procs[name].proc
        return proc.pid if proc is not None else None

    def meter(self) -> CpuMeter:
        """CPU of the three sagaline processes, the broker and PostgreSQL (with backends)."""
        db_port = urlsplit(self.dsn).port
        pids = {name: self.pid(name) for name in self.procs}
        broker_port = _port(self.bootstrap)
        pids["kafka_broker"] = listener_pid(broker_port) if broker_port else None
        pids["postgresql"] = listener_pid(db_port) if db_port else None
        return CpuMeter(pids, children=frozenset({"postgresql"}))

    def close(self) -> dict[str, Any]:
        """Stop everything, drop the schema and topics; the orchestrator's counters."""
        for proc in self.procs.values():
            proc.stop()
        stats: dict[str, Any] = {}
        if self.stats_file.exists():
            stats = json.loads(self.stats_file.read_text(encoding="utf-8"))
        self.tail.close()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(admin_config(self.bootstrap))
        for future in admin.delete_topics(list(self.settings.topics.all())).values():
            future.result(30)
        return stats
