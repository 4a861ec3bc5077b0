"""``sagaline chaos storm``: N ``chaos.storm`` sagas through a fleet under faults.

A calm phase first (half of the sagas, at most ``calm_max``; no faults) measures the fleet's
throughput; then the storm phase starts the rest at once and, until every one
of them is terminal (and every scheduled fault has been applied), SIGKILLs an
orchestrator, a worker and a relay on their own periods (each restarted at
once under its instance id), crashes PostgreSQL (SIGKILL, restart after a
pause), SIGKILLs a broker (restarted after a pause), and floods every input
topic with bad input (:mod:`sagaline.orchestrator.chaos.flood`).  A tracker
follows the state topic and approves each saga when it waits for its
approval.  At the end the fleet is stopped with SIGTERM and
:func:`~sagaline.orchestrator.chaos.invariants.check_invariants` reads the
journal, the state topic, the dead letters and the database.

Throughput is finished sagas per second, from the phase's first start to its
last terminal snapshot; the storm's is reported as a fraction of the calm one.
Since every storm saga starts at once, most are mid-way when the faults stop
and few are finished, so the work done is reported too: steps completed per
second (from the journal's ``StepCompleted`` times) in the calm phase and
while the faults ran, and the one as a fraction of the other.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from sagaline.orchestrator.chaos.fleet import Fleet, FleetSpec, snapshot_code
from sagaline.orchestrator.chaos.flood import Flood
from sagaline.orchestrator.chaos.invariants import (
    ZERO,
    Expected,
    check_invariants,
    steps_completed_per_s,
)
from sagaline.orchestrator.chaos.reading import StateTail, read_topic
from sagaline.orchestrator.chaos.storm_saga import StormData, StormSaga, create_storm_tables
from sagaline.orchestrator.client import DeliveryFailed, SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.core import AvroCodec
from sagaline.orchestrator.runtime.journal_reader import read_journal
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics

__all__ = ["Brokers", "Database", "StormConfig", "run_storm"]

log = logging.getLogger("sagaline.chaos.storm")


class Brokers(Protocol):
    """The Kafka cluster the storm may SIGKILL (``LocalKafka``)."""

    @property
    def bootstrap_servers(self) -> str: ...
    def kill(self, index: int = 0) -> None: ...
    def start_node(self, index: int, *, wait: bool = True, timeout: float = 120.0) -> None: ...


class Database(Protocol):
    """The PostgreSQL server the storm may crash (``LocalPostgres``)."""

    @property
    def url(self) -> str: ...
    def kill(self) -> None: ...
    def start(self, timeout: float = 90.0) -> float: ...


@dataclass(frozen=True)
class StormConfig:
    """The size of the storm and its fault periods (seconds)."""

    sagas: int = 300
    orchestrators: int = 3
    workers: int = 3
    relays: int = 2
    partitions: int = 6
    fail_ratio: float = 0.2
    calm_ratio: float = 0.5
    calm_max: int = 1000
    orchestrator_every: float = 7.0
    worker_every: float = 5.0
    relay_every: float = 9.0
    postgres_every: float = 90.0
    postgres_down: float = 4.0
    broker_every: float = 120.0
    broker_down: float = 10.0
    flood_every: float = 2.0
    sized_rounds: int = 2
    timeout: float = 3600.0
    seed: int = 0
    #: run the fleet from a copy of the code taken at start (see ``FleetSpec.code``)
    snapshot: bool = False
    #: stop the faults after this many seconds even if sagas are left (``None``:
    #: fault until every saga of the storm phase is terminal)
    storm_seconds: float | None = None


@dataclass
class _Faults:
    """The storm's fault schedule, applied from its own thread."""

    config: StormConfig
    fleet: Fleet
    brokers: Brokers
    database: Database
    rng: random.Random
    applied: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _count(self, what: str) -> None:
        self.applied[what] = self.applied.get(what, 0) + 1

    def _kill(self, kind: str) -> None:
        victim = self.rng.choice(self.fleet.of(kind))  # type: ignore[arg-type]
        victim.kill()
        self._count(f"sigkill_{kind}")

    def _postgres(self) -> None:
        self.database.kill()
        self._count("postgres_crash")
        self.stop.wait(self.config.postgres_down)
        self.database.start()

    def _broker(self, index: int) -> None:
        self.brokers.kill(index)
        self._count("broker_sigkill")
        self.stop.wait(self.config.broker_down)
        self.brokers.start_node(index, wait=True, timeout=180.0)
        self._count("broker_restart")

    def _background(self, name: str, action: Any, *args: Any) -> threading.Thread:
        def guarded() -> None:
            try:
                action(*args)
            except Exception as exc:  # a fault that could not be applied is reported
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                log.exception("applying %s", name)

        thread = threading.Thread(target=guarded, name=f"storm-{name}", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        """Kill storms on this thread; the PostgreSQL crash and the broker kill (each
        with its pause and restart) on threads of their own, so the storms go on."""
        c = self.config
        start = time.monotonic()
        due = {"orchestrator": c.orchestrator_every, "worker": c.worker_every}
        due |= {"relay": c.relay_every, "postgres": 3.0, "broker": 8.0}
        slow: dict[str, threading.Thread] = {}
        broker = 0
        while not self.stop.wait(0.25):
            now = time.monotonic() - start
            try:
                self.fleet.check()
                for kind in ("orchestrator", "worker", "relay"):
                    if now >= due[kind]:
                        self._kill(kind)
                        due[kind] = now + getattr(c, f"{kind}_every")
            except Exception as exc:  # a kill that could not be applied is reported
                self.errors.append(f"kill: {type(exc).__name__}: {exc}")
                log.exception("applying a kill")
            if now >= due["postgres"] and not _alive(slow.get("postgres")):
                slow["postgres"] = self._background("postgres", self._postgres)
                due["postgres"] = now + c.postgres_every
            if now >= due["broker"] and not _alive(slow.get("broker")):
                slow["broker"] = self._background("broker", self._broker, broker % 3)
                broker += 1
                due["broker"] = now + c.broker_every
        for thread in slow.values():
            thread.join(300)

    def mandatory_done(self) -> bool:
        return all(
            self.applied.get(k, 0) >= 1
            for k in (
                "sigkill_orchestrator",
                "sigkill_worker",
                "sigkill_relay",
                "postgres_crash",
                "broker_restart",
            )
        )


def _alive(thread: threading.Thread | None) -> bool:
    return thread is not None and thread.is_alive()


@dataclass
class _Tracker:
    """Follows the state topic, approves waiting sagas, records terminal times."""

    tail: StateTail
    client: SagaClient
    approved: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)

    def step(self, seconds: float) -> None:
        for saga_id in set(self.tail.poll(seconds)):
            state = self.tail.states[saga_id]
            if state.is_terminal:
                self.finished.setdefault(saga_id, time.monotonic())
        now = time.monotonic()
        for saga_id, state in self.tail.states.items():
            if state.is_terminal or not any(w.name == "ok" for w in state.waits):
                continue
            if now - self.approved.get(saga_id, -1e9) > 30.0:
                self.client.approve(saga_id, "ok", by="storm@example.com")
                self.approved[saga_id] = now

    def done(self, ids: list[str]) -> bool:
        return all(i in self.finished for i in ids)


def _start(client: SagaClient, ids: list[str], fails: dict[str, bool]) -> None:
    """Start ``ids`` in chunks of 500; a chunk Kafka did not confirm (a loaded machine, a
    cluster just started) is sent again: a repeated start is a no-op."""
    for first in range(0, len(ids), 500):
        for attempt in range(1, 6):
            for n, saga_id in enumerate(ids[first : first + 500], start=first):
                data = StormData(n=n, fail=fails[saga_id])
                client.start(StormSaga, data, saga_id=saga_id, check_existing=False, flush=False)
            try:
                client.flush()
                break
            except DeliveryFailed as exc:
                if attempt == 5:
                    raise
                log.warning("starting sagas (attempt %d): %s; sending them again", attempt, exc)


def _phase(
    tracker: _Tracker, ids: list[str], timeout: float, tick: Any = None, name: str = ""
) -> float:
    """Seconds until every saga of ``ids`` is terminal (``tick`` called meanwhile);
    progress is logged every 30 s (a long storm says how far it got)."""
    started = last = time.monotonic()
    while not tracker.done(ids):
        now = time.monotonic()
        if now - started > timeout:
            break
        if now - last >= 30.0:
            last = now
            done = sum(1 for i in ids if i in tracker.finished)
            what = f"{name} phase: {done} of {len(ids)} sagas terminal"
            log.warning("%s after %.0f s", what, now - started)
        tracker.step(0.3)
        if tick is not None:
            tick()
    return time.monotonic() - started


def _wait_for_leaders(bootstrap: str, topics: TopicNames, partitions: int) -> None:
    """Until every topic has all its partitions with a leader (metadata propagated)."""
    from confluent_kafka.admin import AdminClient

    from sagaline.orchestrator.runtime.kafka_config import admin_config

    admin = AdminClient(admin_config(bootstrap))
    deadline = time.monotonic() + 120.0
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=10).topics
        if all(
            t in meta
            and len(meta[t].partitions) == (1 if t == topics.deadletter else partitions)
            and all(p.leader >= 0 for p in meta[t].partitions.values())
            for t in topics.all()
        ):
            return
        time.sleep(0.5)
    raise RuntimeError(f"topics under {topics.prefix} have no leaders after 120 s")


def _setup(brokers: Brokers, database: Database, config: StormConfig, prefix: str) -> str:
    from sagaline.consumers.migrations import migrate

    topics = TopicNames(prefix)
    ensure_topics(
        brokers.bootstrap_servers,
        topics,
        TopicLayout(partitions=config.partitions, replication=3),
    )
    _wait_for_leaders(brokers.bootstrap_servers, topics, config.partitions)
    schema = prefix.replace("-", "_")
    with psycopg.connect(database.url, autocommit=True) as conn:
        create_storm_tables(conn, schema)
    migrate(database.url, schema)
    return schema


def _a_reply(bootstrap: str, topic: str) -> tuple[bytes | None, bytes] | None:
    """One real reply (key, value) to duplicate."""
    for rec in reversed(read_topic(bootstrap, topic)):
        if rec.value is not None:
            return rec.key, rec.value
    return None


def _lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Records of ``topics`` that ``group`` has not consumed (-1 when unknown).

    Read from the group's committed offsets to the end, read_committed: the
    transaction markers past the last record are not records (comparing with
    the high watermark would count them)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException
    from confluent_kafka import TopicPartition as TP

    from sagaline.orchestrator.runtime.kafka_config import reader_config

    consumer = Consumer(reader_config(bootstrap, group))
    try:
        meta = {t: consumer.list_topics(t, timeout=10).topics[t].partitions for t in topics}
        tps = [TP(t, p) for t in topics for p in meta[t]]
        start = [
            TP(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            for tp in consumer.committed(tps, timeout=10)
        ]
        consumer.assign(start)
        pending, records = {(tp.topic, tp.partition) for tp in start}, 0
        deadline = time.monotonic() + 20.0
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic() or "", msg.partition() or 0))
                elif err is None:
                    records += 1
        return records if not pending else -1
    except KafkaException:
        return -1
    finally:
        consumer.close()


def _settle(bootstrap: str, topics: TopicNames, prefix: str, timeout: float = 180.0) -> int:
    """Wait until the orchestrators and the workers consumed every input; the lag left."""
    deadline = time.monotonic() + timeout
    lag = -1
    while time.monotonic() < deadline:
        lag = _lag(bootstrap, f"{prefix}-orch", [topics.commands, topics.replies])
        worker_lag = _lag(bootstrap, f"{prefix}-workers", [topics.tasks])
        lag = -1 if min(lag, worker_lag) < 0 else lag + worker_lag
        if lag == 0:
            return 0
        time.sleep(1.0)
    return lag


@dataclass
class _Run:
    """One storm's moving parts."""

    config: StormConfig
    brokers: Brokers
    database: Database
    work_dir: Path
    rng: random.Random = field(init=False)
    prefix: str = field(default_factory=lambda: f"storm-{uuid.uuid4().hex[:6]}")
    result: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed or None)
        self.topics = TopicNames(self.prefix)
        self.codec = AvroCodec()
        #: wall-clock windows of the calm and storm phases (the storm's ends with its faults)
        self.windows: dict[str, tuple[datetime, datetime]] = {}

    def storm(self, tracker: _Tracker, faults: _Faults, flood: Flood, calm: list[str]) -> float:
        dup = _a_reply(self.brokers.bootstrap_servers, self.topics.replies)
        rounds = [0, time.monotonic()]

        def tick() -> None:
            if time.monotonic() >= rounds[1]:
                sized = rounds[0] < self.config.sized_rounds
                flood.round(self.rng.choice(calm), dup, sizes=sized)
                rounds[0] += 1
                rounds[1] = time.monotonic() + self.config.flood_every

        thread = threading.Thread(target=faults.run, name="storm-faults", daemon=True)
        thread.start()
        try:
            window = min(self.config.timeout, self.config.storm_seconds or self.config.timeout)
            seconds = _phase(tracker, self.stormy, window, tick, "storm")
            deadline = time.monotonic() + 600.0
            while not faults.mandatory_done() and time.monotonic() < deadline:
                tracker.step(0.3)
                tick()
        finally:
            faults.stop.set()
            thread.join(300)
        self.windows["storm"] = (self.windows["storm"][0], datetime.now(UTC))
        self.result["flood_rounds"] = rounds[0]
        self.during = sum(1 for i in self.stormy if i in tracker.finished)
        # the faults have stopped: the rest must finish now (how long it takes is reported)
        self.recovery = _phase(tracker, self.stormy, self.config.timeout, name="recovery")
        return seconds

    def phases(self, fleet: Fleet, tracker: _Tracker, client: SagaClient) -> None:
        ids = list(self.fails)
        warm, rest = ids[:6], ids[6:]
        calm_n = max(1, min(self.config.calm_max, int(len(rest) * self.config.calm_ratio)))
        calm, self.stormy = rest[:calm_n], rest[calm_n:]
        _start(client, warm, self.fails)
        _phase(tracker, warm, self.config.timeout)
        calm_at = datetime.now(UTC)
        _start(client, calm, self.fails)
        calm_s = _phase(tracker, calm, self.config.timeout, name="calm")
        self.windows["calm"] = (calm_at, datetime.now(UTC))
        bootstrap = self.brokers.bootstrap_servers
        flood = Flood(bootstrap, self.topics, self.config.partitions, self.codec, self.config.seed)
        faults = _Faults(self.config, fleet, self.brokers, self.database, self.rng)
        self.windows["storm"] = (datetime.now(UTC), datetime.now(UTC))  # ends with the faults
        _start(client, self.stormy, self.fails)
        storm_s = self.storm(tracker, faults, flood, calm)
        flood.flush()
        self.bad_inputs = flood.inputs
        self.result["settle_lag"] = _settle(bootstrap, self.topics, self.prefix)
        calm_tp = len(calm) / calm_s if calm_s else 0.0
        storm_tp = self.during / storm_s if storm_s else 0.0
        self.result["faults"] = {**faults.applied, "kills_by_kind": fleet.kills()}
        self.result["fault_errors"] = faults.errors
        self.result["throughput"] = {
            "calm": {"sagas": len(calm), "seconds": round(calm_s, 1), "per_s": round(calm_tp, 2)},
            "storm": {
                "sagas": len(self.stormy),
                "finished_during_faults": self.during,
                "seconds": round(storm_s, 1),
                "recovery_seconds_after_faults": round(self.recovery, 1),
                "per_s": round(storm_tp, 2),
            },
            "storm_fraction_of_calm": round(storm_tp / calm_tp, 3) if calm_tp else None,
        }

    def run(self) -> dict[str, Any]:
        bootstrap, dsn = self.brokers.bootstrap_servers, self.database.url
        schema = _setup(self.brokers, self.database, self.config, self.prefix)
        self.fails = {
            f"storm-{i:06d}": self.rng.random() < self.config.fail_ratio
            for i in range(self.config.sagas)
        }
        self.bad_inputs = []
        self.work_dir.mkdir(parents=True, exist_ok=True)
        spec = FleetSpec(
            bootstrap,
            dsn,
            self.prefix,
            schema,
            self.work_dir,
            self.config.orchestrators,
            self.config.workers,
            self.config.relays,
            snapshot_code(self.work_dir / "code") if self.config.snapshot else None,
        )
        fleet = Fleet(spec)
        fleet.start()
        settings = Settings(kafka_bootstrap_servers=bootstrap, topics=self.topics)
        client = SagaClient(settings, timeout=60.0)  # a loaded machine: slow confirmations
        tail = StateTail(bootstrap, self.topics.state, self.codec)
        stop_codes: dict[str, int | None] = {}
        try:
            self.phases(fleet, _Tracker(tail, client), client)
        finally:
            stop_codes = fleet.stop()
            tail.close()
            client.close()
        expected = Expected(self.fails, self.bad_inputs, fleet.unexpected_exits(), stop_codes)
        read = read_journal(bootstrap, self.topics.journal, codec=self.codec, timeout=600.0)
        invariants = check_invariants(
            bootstrap, self.topics, dsn, schema, self.codec, expected, read=read
        )
        if "throughput" in self.result:
            rates = steps_completed_per_s(read, self.windows)
            calm_rate = rates.get("calm", 0.0)
            self.result["throughput"]["steps_completed_per_s"] = rates
            self.result["throughput"]["storm_steps_fraction_of_calm"] = (
                round(rates.get("storm", 0.0) / calm_rate, 3) if calm_rate else None
            )
        failed = [k for k in ZERO if invariants.get(k) != 0]
        return {
            "passed": not failed and not self.result.get("fault_errors"),
            "failed": failed,
            "prefix": self.prefix,
            "config": asdict(self.config),
            **self.result,
            "invariants": invariants,
        }


def run_storm(
    config: StormConfig, brokers: Brokers, database: Database, work_dir: Path
) -> dict[str, Any]:
    """Run one storm on ``brokers`` (3 brokers) and ``database``; the JSON report."""
    return _Run(config, brokers, database, work_dir).run()
