"""Concurrency limits by key on real Kafka and PostgreSQL, across an orchestrator SIGKILL.

Twenty sagas share one key of a ``max_running=2`` limit.  The orchestrator
runs as a subprocess (so it can be SIGKILLed mid-way); a real worker
(eight concurrent steps, the default; inbox/outbox in PostgreSQL) and the
relay run in threads.  Each step records when it ran in PostgreSQL, in the same
transaction as its inbox row: never more than two sagas' steps overlap,
the wait shows in the saga's status and journal, and once all have
finished the limiter holds and queues nothing (no slot leaked by the kill).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import limit_sagas
import psycopg
import pytest
from limit_sagas import REGISTRY, Job, Limited, Throttled
from orchestrator_process import OrchestratorProcess
from orchestrator_support import check_saga_invariants, delete_prefix_topics, journals
from threaded_stack import ThreadedStack

from sagaline.consumers.migrations import migrate
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.core.audit_rules import audit_entries
from sagaline.orchestrator.core.limiter import LimiterData
from sagaline.orchestrator.core.payloads import from_payload
from sagaline.orchestrator.runtime.core import AvroCodec
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.limits import SlotAcquired, SlotReleased, StepQueued

pytestmark = pytest.mark.integration

SAGAS = 20
LIMITER = "limit:it-customer:acme"


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-limits")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=3))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"t_limits_{uuid.uuid4().hex[:8]}"
    migrate(database_url, name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {name}.limit_runs"
            " (saga_id text NOT NULL, started double precision, finished double precision)"
        )
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _runs(database_url: str, schema: str) -> list[tuple[str, float, float]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(f"SELECT saga_id, started, finished FROM {schema}.limit_runs")
        return [(r[0], float(r[1]), float(r[2])) for r in rows.fetchall()]


def _most_at_once(intervals: list[tuple[str, float, float]]) -> int:
    """The most distinct sagas whose intervals overlap at one instant (ends are open)."""
    points = sorted(
        [(start, 1, saga) for saga, start, _ in intervals]
        + [(end, 0, saga) for saga, _, end in intervals]
    )
    live: dict[str, int] = {}
    most = 0
    for _, starting, saga in points:
        live[saga] = live.get(saga, 0) + (1 if starting else -1)
        most = max(most, sum(1 for n in live.values() if n > 0))
    return most


def _wait_for(what: str, ok: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(ok) and ok():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_twenty_sagas_share_two_slots_across_an_orchestrator_sigkill(
    settings: Settings, database_url: str, schema: str, tmp_path: Path
) -> None:
    limit_sagas.RUNS_TABLE = f"{schema}.limit_runs"
    ids = [f"lim-{i:02d}" for i in range(SAGAS)]
    orch = OrchestratorProcess(settings, "limit_sagas:registry", tmp_path)
    workers = ThreadedStack(
        settings, REGISTRY, database_url, schema, orchestrator=False, relay_poll_interval=1.0
    )
    orch.start()
    try:
        with workers, SagaClient(settings) as client:
            for saga_id in ids:
                client.start(Limited, Job(customer="acme"), saga_id=saga_id)

            def someone_queued() -> bool:
                return any(
                    s is not None and any(x.status == "queued" for x in s.slots)
                    for s in (client.status(i) for i in ids[-5:])
                )

            _wait_for("a saga queued for a slot", someone_queued, 90)
            _wait_for("four runs", lambda: len(_runs(database_url, schema)) >= 4, 90)
            orch.kill()  # mid-way: slots held, sagas queued, grants in flight
            orch.start()

            def all_done() -> bool:
                return all((s := client.status(i)) is not None and s.is_terminal for i in ids)

            _wait_for("every saga to finish", all_done, 180)
            limiter = client.status(LIMITER)
    finally:
        orch.stop()
    runs = _runs(database_url, schema)
    assert sorted({saga for saga, _, _ in runs}) == ids
    assert _most_at_once(runs) <= 2
    prefix, codec = settings.topics.prefix, AvroCodec()
    finals = check_saga_invariants(settings.kafka_bootstrap_servers, prefix, codec, ids)
    assert {finals[i].status for i in ids} == {"completed"}
    assert all(not finals[i].slots for i in ids)
    by_saga = journals(settings.kafka_bootstrap_servers, prefix, codec)
    held: list[tuple[str, float, float]] = []
    for saga_id in ids:
        events = [e for x in by_saga[saga_id] for e in x.events]
        queued = [e for e in events if isinstance(e, StepQueued)]
        acquired = [e for e in events if isinstance(e, SlotAcquired)]
        released = [e for e in events if isinstance(e, SlotReleased)]
        assert [len(queued), len(acquired), len(released)] == [1, 1, 1], saga_id
        assert queued[0].limiter_id == LIMITER and released[0].reason == "step succeeded"
        held.append((saga_id, acquired[0].at.timestamp(), released[0].at.timestamp()))
    assert _most_at_once(held) <= 2  # by the journal's decision times too
    assert audit_entries({i: by_saga[i] for i in ids}).findings == []
    assert limiter is not None and limiter.saga_type == "sagaline.limiter"
    data = from_payload(limiter.data, LimiterData)
    assert data.holders == [] and data.queue == [] and data.granted_total == SAGAS


def test_a_rate_limit_spaces_the_starts_by_its_window_on_kafka(
    settings: Settings, database_url: str, schema: str
) -> None:
    """Five sagas, two starts per three seconds: the window timer of the limiter
    (a durable state timer) grants the rest; no window ever holds more than two."""
    limit_sagas.RUNS_TABLE = f"{schema}.limit_runs"
    prefix = settings.topics.prefix
    ids = [f"rate-{i}" for i in range(5)]
    stack = ThreadedStack(
        settings, REGISTRY, database_url, schema, instance_id="r", relay_poll_interval=1.0
    )
    with stack, SagaClient(settings) as client:
        for saga_id in ids:
            client.start(Throttled, Job(customer="acme"), saga_id=saga_id)

        def all_done() -> bool:
            return all((s := client.status(i)) is not None and s.is_terminal for i in ids)

        _wait_for("every throttled saga to finish", all_done, 120)
    codec = AvroCodec()
    finals = check_saga_invariants(settings.kafka_bootstrap_servers, prefix, codec, ids)
    assert {finals[i].status for i in ids} == {"completed"}
    by_saga = journals(settings.kafka_bootstrap_servers, prefix, codec)
    granted = sorted(
        e.at for i in ids for x in by_saga[i] for e in x.events if isinstance(e, SlotAcquired)
    )
    assert len(granted) == len(ids)
    for n, start in enumerate(granted):  # any 3 s window holds at most 2 grants
        assert len([t for t in granted[n:] if (t - start).total_seconds() < 3]) <= 2
    assert audit_entries({i: by_saga[i] for i in ids}).findings == []
