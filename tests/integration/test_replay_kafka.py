"""Replay and audit against a real journal topic on real Kafka.

Journal entries come from sagas run through the real decider; they are
written with a transactional producer, plus one aborted transaction whose
entries must never be seen.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from journal_builders import (
    JOURNAL_TOPIC_CONFIG,
    T0,
    Refund,
    SagaRun,
    publish_journal,
    rehash,
    run_refund,
)

from sagaline.orchestrator.audit import audit
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.core.timeline import build_timeline
from sagaline.orchestrator.replay import definition_lookup, replay
from sagaline.orchestrator.runtime.journal_reader import read_journal

pytestmark = pytest.mark.integration

OUTCOMES = ("approved", "rejected", "timeout", "failed_notify", "waiting", "cancelled")


@dataclass
class Journal:
    bootstrap: str
    names: TopicNames
    runs: dict[str, SagaRun]
    aborted_id: str


@pytest.fixture
def journal(
    kafka_bootstrap: str, topic_prefix: str, create_topics: Callable[..., list[str]]
) -> Journal:
    names = TopicNames(topic_prefix)
    create_topics([names.journal], partitions=3, config=JOURNAL_TOPIC_CONFIG)
    runs = {f"{topic_prefix}-{o}": run_refund(f"{topic_prefix}-{o}", o) for o in OUTCOMES}
    entries = [e for run in runs.values() for e in run.entries]
    publish_journal(kafka_bootstrap, names.journal, entries, transactional_id=f"{topic_prefix}-a")
    aborted = run_refund(f"{topic_prefix}-aborted", "approved")
    publish_journal(
        kafka_bootstrap,
        names.journal,
        aborted.entries,
        transactional_id=f"{topic_prefix}-b",
        abort=True,
    )
    return Journal(kafka_bootstrap, names, runs, aborted.saga_id)


def test_read_sees_committed_entries_only(journal: Journal) -> None:
    read = read_journal(journal.bootstrap, journal.names.journal, timeout=60)
    by_saga = read.by_saga()
    assert set(by_saga) == set(journal.runs)
    assert journal.aborted_id not in by_saga
    for saga_id, run in journal.runs.items():
        assert by_saga[saga_id] == run.entries
    assert read.undecodable == []
    # the end snapshot counts the commit/abort markers: offsets are not "last + 1"
    assert sum(read.end_offsets.values()) > len(read.records)


def test_replay_rebuilds_the_same_timelines_and_strict_is_clean(journal: Journal) -> None:
    report = replay(
        journal.bootstrap,
        journal.names.journal,
        strict=True,
        definitions=definition_lookup([Refund]),
        timeout=60,
    )
    assert report.ok, [d.render() for d in report.divergences]
    assert report.checked_inputs == sum(len(r.entries) for r in journal.runs.values())
    timelines = {t.saga_id: t for t in report.sagas}
    for saga_id, run in journal.runs.items():
        assert timelines[saga_id] == build_timeline(run.entries)
    approved = timelines[f"{journal.names.prefix}-approved"]
    assert approved.status == "completed"
    assert approved.approvals[0].by == "manager@example.com"


def test_replay_of_one_saga_and_of_one_type(journal: Journal) -> None:
    saga_id = f"{journal.names.prefix}-failed_notify"
    report = replay(journal.bootstrap, journal.names.journal, saga_id=saga_id, timeout=60)
    assert [t.saga_id for t in report.sagas] == [saga_id]
    assert [c.step for c in report.sagas[0].compensations] == ["reverse_payment", "update_record"]
    other = replay(journal.bootstrap, journal.names.journal, saga_type="no.such.type", timeout=60)
    assert other.sagas == []


def test_replay_since_a_time_starts_mid_history(journal: Journal) -> None:
    # entries are timestamped with their envelope time: T0+1s, T0+2s, ...
    report = replay(
        journal.bootstrap,
        journal.names.journal,
        since=T0 + timedelta(seconds=4),
        strict=True,
        definitions=definition_lookup([Refund]),
        timeout=60,
    )
    assert report.sagas, "entries after --since must be read"
    assert all(t.items[0].at >= T0 + timedelta(seconds=4) for t in report.sagas)
    assert sorted(report.unverified) == sorted(t.saga_id for t in report.sagas if t.partial)
    assert report.ok
    # a time after everything reads nothing
    late = replay(journal.bootstrap, journal.names.journal, since=T0 + timedelta(days=30))
    assert late.sagas == []


def test_audit_clean_then_tampered(journal: Journal) -> None:
    clean = audit(journal.bootstrap, journal.names.journal, timeout=60)
    assert clean.ok, clean.render()
    assert clean.sagas == len(OUTCOMES)

    # a forger appends a re-dispatch of a completed step to a finished saga, chained
    run = journal.runs[f"{journal.names.prefix}-approved"]
    dispatch = run.entries[0].events[-1]
    forged = run.entries[-1].model_copy(
        update={"seq": run.entries[-1].seq + 1, "events": [dispatch]}
    )
    [signed] = rehash([*run.entries, forged], start=len(run.entries))[-1:]
    publish_journal(
        journal.bootstrap,
        journal.names.journal,
        [signed],
        transactional_id=f"{journal.names.prefix}-forger",
        raw=[(run.saga_id, b"\xc3\x01 not avro at all")],
    )
    report = audit(journal.bootstrap, journal.names.journal, timeout=60)
    assert not report.ok
    checks = {f.check for f in report.findings}
    assert {"dispatch", "terminal", "decode"} <= checks
    assert json.loads(json.dumps(report.to_dict()))["ok"] is False


def test_audit_fails_on_a_journal_whose_start_was_deleted(
    journal: Journal, kafka_admin: AdminClient
) -> None:
    """Records deleted from a partition's start (retention, delete-records) take whole
    sagas with them: what is left may be clean, the audit must not pass."""
    topic = journal.names.journal
    whole = read_journal(journal.bootstrap, topic, timeout=60)
    partition = max(whole.end_offsets, key=lambda p: whole.end_offsets[p])
    first_offsets = sorted(r.offset for r in whole.records if r.partition == partition)
    cut = first_offsets[len(first_offsets) // 2]
    [future] = kafka_admin.delete_records([TopicPartition(topic, partition, cut)]).values()
    future.result(30)

    report = audit(journal.bootstrap, topic, timeout=60)
    assert not report.ok
    truncated = [f for f in report.findings if f.saga_id is None and f.check == "chain"]
    assert [f.message.split(",")[0] for f in truncated] == [
        f"{topic}[{partition}] starts at offset {cut}"
    ]
    assert "the journal topic must keep every record" in truncated[0].render()
    # --since reads from a time on, by choice: a deleted start is not its concern
    since = audit(journal.bootstrap, topic, since=T0 + timedelta(days=365), timeout=60)
    assert not [f for f in since.findings if f.saga_id is None]


def test_missing_topic_is_a_clear_error(kafka_bootstrap: str, topic_prefix: str) -> None:
    from sagaline.orchestrator.runtime.journal_reader import JournalReadError

    with pytest.raises(JournalReadError, match="does not exist"):
        read_journal(kafka_bootstrap, f"{topic_prefix}.journal", timeout=10)
