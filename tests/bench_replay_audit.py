"""Benchmark of replay and audit (prints one JSON document; not a test).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 .venv/bin/python tests/bench_replay_audit.py [sagas]

Builds refund journals with the real decider (4 outcomes in rotation), then
measures in memory: hashing one entry, the audit, timelines, the strict
re-decide; and, when Kafka is configured, writing them to a fresh 3-partition
journal topic and reading, auditing and strictly replaying them from Kafka.
The topic is deleted afterwards.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

from journal_builders import JOURNAL_TOPIC_CONFIG, REGISTRY, publish_journal, run_refund

from sagaline.orchestrator.audit import audit, audit_entries
from sagaline.orchestrator.core.journal import entry_hash
from sagaline.orchestrator.replay import definition_lookup, replay, replay_entries
from sagaline.orchestrator.runtime.journal_reader import read_journal
from sagaline.orchestrator.runtime.kafka_config import admin_config

OUTCOMES = ("approved", "rejected", "failed_notify", "timeout")


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds) if seconds > 0 else 0.0


def main(sagas: int) -> dict[str, Any]:
    runs = [run_refund(f"bench-{i}", OUTCOMES[i % len(OUTCOMES)]) for i in range(sagas)]
    by_saga = {r.saga_id: r.entries for r in runs}
    entries = [e for r in runs for e in r.entries]
    lookup = definition_lookup(REGISTRY)
    result: dict[str, Any] = {"sagas": sagas, "entries": len(entries)}

    sample = entries[3]
    t = time.perf_counter()
    for _ in range(2000):
        entry_hash(sample)
    result["entry_hash_us"] = round((time.perf_counter() - t) / 2000 * 1e6, 1)

    t = time.perf_counter()
    assert audit_entries(by_saga).ok
    result["audit_in_memory_entries_per_s"] = _rate(len(entries), time.perf_counter() - t)
    t = time.perf_counter()
    replay_entries(by_saga)
    result["timelines_entries_per_s"] = _rate(len(entries), time.perf_counter() - t)
    t = time.perf_counter()
    assert replay_entries(by_saga, strict=True, definitions=lookup).ok
    result["strict_in_memory_entries_per_s"] = _rate(len(entries), time.perf_counter() - t)

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        return result
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    topic = f"bench-{uuid.uuid4().hex[:8]}.journal"
    admin = AdminClient(admin_config(bootstrap))
    for future in admin.create_topics(
        [NewTopic(topic, 3, 1, config=JOURNAL_TOPIC_CONFIG)]
    ).values():
        future.result(30)
    try:
        time.sleep(1.0)
        publish_journal(bootstrap, topic, entries, transactional_id=topic)
        t = time.perf_counter()
        read = read_journal(bootstrap, topic)
        result["kafka_read_s"] = round(time.perf_counter() - t, 3)
        assert len(read.records) == len(entries)
        t = time.perf_counter()
        assert audit(bootstrap, topic).ok
        result["kafka_audit_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        assert replay(bootstrap, topic, strict=True, definitions=lookup).ok
        result["kafka_strict_replay_s"] = round(time.perf_counter() - t, 3)
        result["kafka_strict_replay_entries_per_s"] = _rate(
            len(entries), result["kafka_strict_replay_s"]
        )
    finally:
        for future in admin.delete_topics([topic]).values():
            future.result(30)
    return result


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    print(json.dumps(main(count), indent=2))
