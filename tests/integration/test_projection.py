"""The read model: a real journal on Kafka projected into real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from journal_builders import JOURNAL_TOPIC_CONFIG, publish_journal, run_refund

from sagaline.consumers.projections import JournalProjection, get_saga, get_timeline, list_sagas
from sagaline.orchestrator.config import TopicNames

pytestmark = pytest.mark.integration

OUTCOMES = ("approved", "rejected", "timeout", "failed_notify", "waiting", "cancelled")


def project(
    bootstrap: str, names: TopicNames, database_url: str, schema: str, name: str
) -> JournalProjection:
    projection = JournalProjection(
        bootstrap, names.journal, database_url, schema=schema, projection=name, batch_size=7
    )
    projection.run(until_caught_up=True, timeout=90)
    return projection


def test_projection_is_exactly_once_and_incremental(
    kafka_bootstrap: str,
    database_url: str,
    topic_prefix: str,
    pg_schema: str,
    create_topics: Callable[..., list[str]],
) -> None:
    names = TopicNames(topic_prefix)
    create_topics([names.journal], partitions=3, config=JOURNAL_TOPIC_CONFIG)
    runs = {o: run_refund(f"{topic_prefix}-{o}", o) for o in OUTCOMES}
    # the waiting saga's approval arrives later, in a second transaction
    waiting = runs["waiting"]
    first = [e for run in runs.values() for e in run.entries]
    publish_journal(kafka_bootstrap, names.journal, first, transactional_id=f"{topic_prefix}-1")
    aborted = run_refund(f"{topic_prefix}-aborted", "approved")
    publish_journal(
        kafka_bootstrap,
        names.journal,
        aborted.entries,
        transactional_id=f"{topic_prefix}-2",
        abort=True,
    )

    name = f"{topic_prefix}-projection"
    p1 = project(kafka_bootstrap, names, database_url, pg_schema, name)
    assert p1.stats.applied == len(first)
    assert p1.stats.skipped == 0

    rows = {r.saga_id: r for r in list_sagas(database_url, schema=pg_schema)}
    assert set(rows) == {run.saga_id for run in runs.values()}
    assert aborted.saga_id not in rows
    assert rows[runs["approved"].saga_id].status == "completed"
    assert rows[runs["approved"].saga_id].finished_at is not None
    assert rows[runs["rejected"].saga_id].status == "compensated"
    assert rows[runs["cancelled"].saga_id].status == "cancelled"
    pending = rows[waiting.saga_id]
    assert (pending.status, pending.waiting_for, pending.last_seq) == ("waiting", "manager_ok", 3)
    failed = rows[runs["failed_notify"].saga_id]
    assert failed.error is not None and "Declined" in failed.error
    assert failed.attempts >= 4

    # a restart resumes from the offsets stored in PostgreSQL: nothing is applied twice
    p2 = project(kafka_bootstrap, names, database_url, pg_schema, name)
    assert (p2.stats.applied, p2.stats.skipped) == (0, 0)

    # new entries are folded onto the stored snapshot
    before = len(waiting.entries)
    waiting.signal("manager_ok", approved=True, by="boss@example.com")
    waiting.work()
    publish_journal(
        kafka_bootstrap,
        names.journal,
        waiting.entries[before:],
        transactional_id=f"{topic_prefix}-3",
    )
    p3 = project(kafka_bootstrap, names, database_url, pg_schema, name)
    assert p3.stats.applied == len(waiting.entries) - before
    row = get_saga(database_url, waiting.saga_id, schema=pg_schema)
    assert row is not None
    assert (row.status, row.waiting_for, row.last_seq) == ("completed", None, len(waiting.entries))
    timeline = get_timeline(database_url, waiting.saga_id, schema=pg_schema)
    assert [t.seq for t in timeline] == list(range(1, len(waiting.entries) + 1))
    assert any("by=boss@example.com" in t.input for t in timeline)

    # lost offsets (as after a crash between two systems) only cause skips, never doubles
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {pg_schema}.projection_offsets")
    p4 = project(kafka_bootstrap, names, database_url, pg_schema, name)
    assert p4.stats.applied == 0
    assert p4.stats.skipped == sum(len(r.entries) for r in runs.values())
    assert get_saga(database_url, waiting.saga_id, schema=pg_schema) == row

    only_waiting = list_sagas(database_url, schema=pg_schema, status="compensated")
    assert {r.saga_id for r in only_waiting} == {
        runs[o].saga_id for o in ("rejected", "timeout", "failed_notify")
    }
    assert list_sagas(database_url, schema=pg_schema, saga_type="other.type") == []
