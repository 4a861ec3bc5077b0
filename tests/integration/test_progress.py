"""Live progress on real Kafka and PostgreSQL (issue 15, item 6).

The orchestrator, a real worker (inbox/outbox in PostgreSQL) and the relay
run in threads.  Steps and an agent turn publish progress with
``ctx.progress``; ``SagaHandle.stream()`` and ``sagaline watch`` show it
interleaved with the saga's states and end with the final state.  A
missing progress topic and a broker that refuses every progress record do
not fail a step.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from orchestrator_support import check_saga_invariants, delete_prefix_topics
from progress_sagas import DRAFT_PROGRESS, REGISTRY, TOKENS, Card, Chat, Digest, Topic
from threaded_stack import ThreadedStack

from sagaline.consumers.migrations import migrate
from sagaline.orchestrator.client import SagaClient, StreamEvent
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.core import AvroCodec
from sagaline.orchestrator.runtime.kafka_config import admin_config
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics

pytestmark = pytest.mark.integration

#: what ``Digest.publish`` says: the length of the text ``draft`` streamed
PUBLISHED = f"publishing {len(''.join(p for _, _, p in DRAFT_PROGRESS if p))} characters"


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-progress")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=3))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"t_progress_{uuid.uuid4().hex[:8]}"
    migrate(database_url, name)
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _progress(events: list[StreamEvent]) -> list[tuple[str, str | None, float | None, str | None]]:
    return [
        (e.progress.step, e.progress.message, e.progress.fraction, e.progress.partial)
        for e in events
        if e.progress is not None
    ]


def test_stream_yields_a_steps_progress_in_order_between_the_states_then_the_final_state(
    settings: Settings, database_url: str, schema: str
) -> None:
    with ThreadedStack(settings, REGISTRY, database_url, schema), SagaClient(settings) as client:
        handle = client.start(Digest, Topic(name="sagas"), saga_id="progress-1")
        events = list(handle.stream(timeout=90))
    assert events[-1].final and events[-1].state is not None
    assert events[-1].state.status == "completed"
    assert sum(e.final for e in events) == 1
    expected = [("draft", m, f, p) for m, f, p in DRAFT_PROGRESS]
    assert _progress(events) == [*expected, ("publish", PUBLISHED, 1.0, None)]
    records = [e.progress for e in events if e.progress is not None]
    assert [r.seq for r in records] == [*range(1, len(DRAFT_PROGRESS) + 1), 1]
    assert {r.saga_id for r in records} == {"progress-1"}
    # a state that follows draft comes after all of draft's progress
    index = {id(e): i for i, e in enumerate(events)}
    last_draft = max(index[id(e)] for e in events if e.progress and e.progress.step == "draft")
    after_draft = [
        index[id(e)]
        for e in events
        if e.state is not None and (e.state.node == "publish" or e.state.is_terminal)
    ]
    assert after_draft and min(after_draft) > last_draft
    seqs = [e.state.journal_seq for e in events if e.state is not None]
    assert seqs == sorted(set(seqs))  # each state once, in order
    check_saga_invariants(
        settings.kafka_bootstrap_servers, settings.topics.prefix, AvroCodec(), ["progress-1"]
    )


def test_an_agent_turn_streams_partial_llm_output(
    settings: Settings, database_url: str, schema: str
) -> None:
    with ThreadedStack(settings, REGISTRY, database_url, schema), SagaClient(settings) as client:
        handle = client.start(Chat, Topic(name="kafka"), saga_id="progress-chat")
        events = list(handle.stream(timeout=90, modes=("progress",)))
    assert [e.mode for e in events[:-1]] == ["progress"] * (len(TOKENS) + 1)
    assert _progress(events) == [
        ("think#1", "turn 1: asking the model", None, None),
        *(("think#1", None, None, token) for token in TOKENS),
    ]
    final = events[-1].state
    assert final is not None and final.status == "completed"
    assert "Kafka keeps the journal." in final.data.data.decode()  # type: ignore[union-attr]


def test_the_streams_reader_approves_when_the_saga_asks(
    settings: Settings, database_url: str, schema: str
) -> None:
    seen: list[str] = []
    with ThreadedStack(settings, REGISTRY, database_url, schema), SagaClient(settings) as client:
        handle = client.start(Card, Topic(name="cy"), saga_id="progress-card")
        for event in handle.stream(timeout=90):
            if event.progress is not None:
                seen.append(f"progress {event.progress.step} {event.progress.message}")
            elif event.state is not None:
                seen.append(f"state {event.state.status} {event.state.node}")
                if [w.name for w in event.state.waits] == ["manager"]:
                    client.approve("progress-card", "manager", by="grace@example.com")
    assert event.final and event.state is not None and event.state.status == "completed"
    assert "progress write_card writing a card for cy" in seen
    assert "state waiting manager" in seen
    assert seen.index("progress write_card writing a card for cy") < seen.index(
        "state waiting manager"
    )


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    conn = ("--bootstrap", settings.kafka_bootstrap_servers, "--prefix", settings.topics.prefix)
    return subprocess.run(
        [sys.executable, "-m", "sagaline.orchestrator.cli", *args, *conn],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sagaline_watch_prints_progress_and_the_final_state(
    settings: Settings, database_url: str, schema: str
) -> None:
    with ThreadedStack(settings, REGISTRY, database_url, schema), SagaClient(settings) as client:
        handle = client.start(Digest, Topic(name="watch"), saga_id="progress-watch")
        watched = _cli(settings, "watch", "progress-watch", "--timeout", "90")
        assert watched.returncode == 0, watched.stderr
        lines = watched.stdout.splitlines()
        as_json = _cli(settings, "watch", "progress-watch", "--json", "--timeout", "30")
        missing = _cli(settings, "watch", "no-such-saga", "--timeout", "30")
        assert handle.wait(10).status == "completed"
    shown = [line[10:] for line in lines if re.match(r"\d\d:\d\d:\d\d  (draft|publish)", line)]
    assert shown == [
        "draft   0%  reading sources",
        "draft  33%  read source 1 of 3",
        "draft  67%  read source 2 of 3",
        "draft 100%  read source 3 of 3",
        "draft > Sagas survive crashes.",
        f"publish 100%  {PUBLISHED}",
    ]
    states = [line for line in lines if re.match(r"\d\d:\d\d:\d\d  \[", line)]
    assert all(line.endswith(("(step)", "-")) for line in states), states
    final = lines.index("progress-watch  [it.progress-digest v1]  completed")
    last = max(i for i, line in enumerate(lines) if re.match(r"\d\d:\d\d:\d\d  publish", line))
    assert final > last
    assert as_json.returncode == 0, as_json.stderr
    items = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [i["message"] for i in items if i["mode"] == "progress" and i["message"]] == [
        m for m, _, _ in DRAFT_PROGRESS if m
    ] + [PUBLISHED]
    assert items[-1]["mode"] == "state" and items[-1]["status"] == "completed"
    assert missing.returncode == 5, (missing.returncode, missing.stderr)
    assert len(missing.stderr.strip().splitlines()) == 1


def _wait_for(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached")


def test_a_missing_progress_topic_fails_no_step(
    settings: Settings, database_url: str, schema: str
) -> None:
    admin = AdminClient(admin_config(settings.kafka_bootstrap_servers))
    admin.delete_topics([settings.topics.progress], operation_timeout=30)[
        settings.topics.progress
    ].result(30)
    _wait_for(lambda: settings.topics.progress not in admin.list_topics(timeout=10).topics)
    with (
        ThreadedStack(settings, REGISTRY, database_url, schema) as stack,
        SagaClient(settings) as client,
    ):
        handle = client.start(Digest, Topic(name="lost"), saga_id="progress-lost")
        events = list(handle.stream(timeout=90))
        publisher = stack.worker._progress.publisher
        stats = publisher.stats
        assert stats.published + stats.dropped == len(DRAFT_PROGRESS) + 1
        # delivery reports are served by the next publish or flush
        _wait_for(
            lambda: (
                publisher.flush(0) >= 0 and stats.failed + stats.dropped == len(DRAFT_PROGRESS) + 1
            )
        )
    assert events[-1].final and events[-1].state is not None
    assert events[-1].state.status == "completed"
    assert _progress(events) == []
    assert settings.topics.progress not in admin.list_topics(timeout=10).topics  # not auto-created


def test_a_broker_refusing_every_progress_record_fails_no_step(
    settings: Settings, database_url: str, schema: str
) -> None:
    admin = AdminClient(admin_config(settings.kafka_bootstrap_servers))
    small = ConfigEntry("max.message.bytes", "64", incremental_operation=AlterConfigOpType.SET)
    refuse = ConfigResource("topic", settings.topics.progress, incremental_configs=[small])
    for future in admin.incremental_alter_configs([refuse]).values():
        future.result(30)
    with (
        ThreadedStack(settings, REGISTRY, database_url, schema) as stack,
        SagaClient(settings) as client,
    ):
        handle = client.start(Digest, Topic(name="refused"), saga_id="progress-refused")
        final = handle.wait(90)
        publisher = stack.worker._progress.publisher
        stats = publisher.stats
        _wait_for(lambda: publisher.flush(0) >= 0 and stats.failed == len(DRAFT_PROGRESS) + 1)
    assert final.status == "completed"
    assert stats.delivered == 0
