"""Local steps (``@step(local=True)``) through the real orchestrator, Kafka and PostgreSQL.

The orchestrator runs in a thread with a :class:`LocalStepRunner` wired in; remote steps are
answered by the test responder.  Checked: local tasks never reach the tasks topic, a saga's
consecutive local steps commit in one Kafka transaction (their journal entries sit at
consecutive offsets: a transaction's commit marker takes an offset), local database steps
write once and record their inbox row, a local step's compensation runs locally, a re-run
of a recorded task reuses the recorded reply, and the journal audits and replays strictly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from local_step_sagas import (
    EFFECTS_TABLE,
    REGISTRY,
    LocalChain,
    LocalData,
    LocalDb,
    Mixed,
    SlowFirst,
)
from orchestrator_support import Responder, Running, delete_prefix_topics, read_committed
from psycopg_pool import ConnectionPool

from sagaline.consumers.local_steps import LocalStepRunner
from sagaline.consumers.migrations import migrate
from sagaline.orchestrator.audit import audit
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.core.payloads import from_payload, to_payload
from sagaline.orchestrator.replay import definition_lookup, replay
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.base import Envelope
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.replies import StepFailed, StepSucceeded
from sagaline.schemas.tasks import ExecuteStep

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-local")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=2))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


@pytest.fixture
def pool(fresh_database_url: str) -> Iterator[ConnectionPool]:
    migrate(fresh_database_url)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute(EFFECTS_TABLE)
    with ConnectionPool(fresh_database_url, min_size=1, max_size=4, open=True) as p:
        yield p


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calls"
    monkeypatch.setenv("SAGALINE_TEST_CALLS", str(path))
    return path


@contextmanager
def _running(settings: Settings, pool: ConnectionPool | None) -> Iterator[Running]:
    """An orchestrator with local steps running in a thread, plus a responder.

    The responder starts before the orchestrator and stops before it; the local step
    runner closes after the orchestrator's thread has stopped."""
    local = LocalStepRunner(REGISTRY, pool=pool, replies_topic=settings.topics.replies)
    config = EngineConfig(instance_id="a", group_id=f"{settings.topics.prefix}-orch")
    orch = Orchestrator(settings, CoreLogic(REGISTRY), config, codec=AvroCodec(), local_steps=local)
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    responder = Responder(bootstrap, prefix, AvroCodec()).start()
    try:
        with Running(orch) as running:
            try:
                yield running
            finally:
                responder.stop()
    finally:
        local.close()


def _journal(settings: Settings, saga_id: str) -> list[tuple[int, JournalEntry]]:
    codec = AvroCodec()
    out = []
    for rec in read_committed(settings.kafka_bootstrap_servers, settings.topics.journal):
        if rec.key == saga_id and rec.value is not None:
            entry = codec.decode(rec.value, (JournalEntry,))
            assert isinstance(entry, JournalEntry)
            out.append((rec.offset, entry))
    return out


def _effects(pool: ConnectionPool) -> list[tuple[str, str]]:
    with pool.connection() as conn:
        rows = conn.execute("SELECT saga_id, step FROM local_effects ORDER BY 1, 2").fetchall()
    return [(r[0], r[1]) for r in rows]


def test_local_and_remote_steps_one_transaction_and_replay(settings: Settings, calls: Path) -> None:
    with _running(settings, None) as running, SagaClient(settings) as client:
        chain = client.start(LocalChain, LocalData(label="c"), saga_id="chain-1")
        mixed = client.start(Mixed, LocalData(label="m"), saga_id="mixed-1")
        refused = client.start(Mixed, LocalData(label="r", fail_at="finish"), saga_id="mixed-2")
        done_chain, done_mixed, done_refused = (h.wait(timeout=60) for h in (chain, mixed, refused))
        runs = running.orch._outbound.runs
    assert done_chain.status == "completed"
    assert from_payload(done_chain.data, LocalData).count == 3
    assert done_mixed.status == "completed"
    assert done_refused.status == "compensated"
    assert runs == 3 + 2 + 3  # chain: 3; mixed: reserve, finish; refused: reserve, finish, release
    # the local tasks never reached the tasks topic: only the remote step did
    tasks = read_committed(settings.kafka_bootstrap_servers, settings.topics.tasks)
    assert sorted(r.key or "" for r in tasks) == ["mixed-1", "mixed-2"]
    # StartSaga and the three local replies: one transaction (consecutive offsets)
    journal = _journal(settings, "chain-1")
    assert [type(e.input).__name__ for _o, e in journal] == ["StartSaga"] + ["StepSucceeded"] * 3
    offsets = [o for o, _e in journal]
    assert offsets == list(range(offsets[0], offsets[0] + 4))
    executed = sorted(calls.read_text().split())
    chain = ["chain-1/one", "chain-1/two", "chain-1/three"]
    mixed = ["mixed-1/reserve", "mixed-1/finish", "mixed-2/reserve", "mixed-2/finish"]
    assert executed == sorted([*chain, *mixed, "mixed-2/release"])
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.topics.journal
    report = audit(bootstrap, topic, timeout=60)
    assert report.ok, report.render()
    assert report.statuses == {"completed": 2, "compensated": 1}
    replayed = replay(bootstrap, topic, strict=True, definitions=definition_lookup(REGISTRY))
    assert replayed.ok, [d.render() for d in replayed.divergences]
    timelines = {t.saga_id: t for t in replayed.sagas}
    assert [c.step for c in timelines["mixed-2"].compensations] == ["reserve"]


def test_local_database_steps_write_once_and_compensate_locally(
    settings: Settings, pool: ConnectionPool, calls: Path
) -> None:
    with _running(settings, pool), SagaClient(settings) as client:
        ok = client.start(LocalDb, LocalData(label="ok"), saga_id="db-ok")
        bad = client.start(LocalDb, LocalData(label="bad", fail_at="credit"), saga_id="db-bad")
        done_ok, done_bad = ok.wait(timeout=60), bad.wait(timeout=60)
    assert done_ok.status == "completed"
    assert done_bad.status == "compensated"
    # the refused credit's writes rolled back with its savepoint; the refund ran locally
    assert _effects(pool) == [
        ("db-bad", "debit"),
        ("db-bad", "refund"),
        ("db-ok", "credit"),
        ("db-ok", "debit"),
        ("db-ok", "notify"),
    ]
    assert read_committed(settings.kafka_bootstrap_servers, settings.topics.tasks) == []
    with pool.connection() as conn:
        inbox = conn.execute(
            "SELECT saga_id, step, kind, outcome FROM sagaline.inbox ORDER BY 1, 2, 3"
        ).fetchall()
    assert [tuple(row) for row in inbox] == [
        ("db-bad", "credit", "step", "failed"),
        ("db-bad", "debit", "compensate", "succeeded"),
        ("db-bad", "debit", "step", "succeeded"),
        ("db-ok", "credit", "step", "succeeded"),
        ("db-ok", "debit", "step", "succeeded"),
        ("db-ok", "notify", "step", "succeeded"),
    ]
    # the audit's inbox check: every recorded execution agrees with the journal
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.topics.journal
    report = audit(bootstrap, topic, timeout=60, database_url=pool.conninfo)
    assert report.ok, report.render()
    assert report.inbox_rows == 6


def test_a_local_step_past_its_timeout_fails_and_is_retried(
    settings: Settings, calls: Path
) -> None:
    with _running(settings, None), SagaClient(settings) as client:
        done = client.start(SlowFirst, LocalData(label="s"), saga_id="slow-1").wait(timeout=60)
    assert done.status == "completed"
    replies = [e.input for _o, e in _journal(settings, "slow-1")[1:]]
    failed = [r for r in replies if isinstance(r, StepFailed)]
    assert [(r.attempt, r.error_type, r.retryable) for r in failed] == [(1, "StepTimeout", True)]
    assert [type(r).__name__ for r in replies][-1] == "StepSucceeded"
    # the first attempt was abandoned at its timeout (still sleeping when the retry ran)
    assert calls.read_text().split() == ["slow-1/slow#1", "slow-1/slow#2"]


def test_a_rerun_of_a_recorded_local_task_reuses_its_reply(
    settings: Settings, pool: ConnectionPool, calls: Path
) -> None:
    """What the re-run after an aborted Kafka transaction does: the inbox answers."""
    runner = LocalStepRunner(REGISTRY, pool=pool, replies_topic=settings.topics.replies)
    task = ExecuteStep(
        envelope=Envelope(
            message_id="m-1",
            saga_id="rerun-1",
            saga_type=LocalDb.type_name,
            saga_version=1,
            occurred_at=datetime.now(UTC),
        ),
        step="debit",
        attempt=1,
        idempotency_key="rerun-1/debit/1",
        task_id="rerun-1/debit/1/1",
        args=to_payload(LocalData(label="x")),
    )
    try:
        assert runner.is_local(task)
        first = runner.run_tasks([task], 10.0)
        again = runner.run_tasks([task], 10.0)
    finally:
        runner.close()
    assert isinstance(first[0], StepSucceeded)
    assert again == first  # the recorded reply, same message id: the decider sees it once
    assert _effects(pool) == [("rerun-1", "debit")]
    assert calls.read_text().split() == ["rerun-1/debit"]
