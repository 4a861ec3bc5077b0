"""Durable timers and tombstones across orchestrator restarts (real Kafka)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from orchestrator_sagas import REGISTRY, PipeData, Pipeline, Sleepy
from orchestrator_support import (
    Responder,
    check_saga_invariants,
    delete_prefix_topics,
    journals,
    read_committed,
)

from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.kafka_config import client_producer_config
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.replies import StepSucceeded
from sagaline.schemas.state import SagaState
from sagaline.schemas.timers import TimerFired

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-timers")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=2))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


def start_thread(orch: Orchestrator) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            orch.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def make(settings: Settings, **kw: float) -> Orchestrator:
    config = EngineConfig(instance_id="t", group_id=f"{settings.topics.prefix}-orch", **kw)  # type: ignore[arg-type]
    return Orchestrator(settings, CoreLogic(REGISTRY), config, codec=AvroCodec())


def wait_until(
    client: SagaClient, saga_id: str, predicate: object, timeout: float = 30
) -> SagaState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.status(saga_id)
        if state is not None and predicate(state):  # type: ignore[operator]
            return state
        time.sleep(0.1)
    raise AssertionError(f"{saga_id} never reached the expected state")


def test_sleep_timer_fires_once_after_a_restart(settings: Settings) -> None:
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    responder = Responder(bootstrap, prefix, codec).start()
    try:
        with SagaClient(settings) as client:
            first = make(settings)
            thread, errors = start_thread(first)
            client.start(Sleepy, PipeData(label="zz"), saga_id="sleeper")
            asleep = wait_until(client, "sleeper", lambda s: s.sleeping_until is not None)
            first.request_stop()
            thread.join(30)
            assert not errors
            assert asleep.status != "completed"
            # the timer is only in the state topic now; a new process restores it
            second = make(settings)
            thread, errors = start_thread(second)
            try:
                final = client.wait("sleeper", timeout=30)
            finally:
                second.request_stop()
                thread.join(30)
            assert not errors
            assert second.stats.restored_sagas >= 1
    finally:
        responder.stop()
    assert final.status == "completed"
    assert final.sleeping_until is None
    fired = [
        e.input
        for e in journals(bootstrap, prefix, codec)["sleeper"]
        if isinstance(e.input, TimerFired)
    ]
    assert len(fired) == 1 and fired[0].kind == "sleep"
    assert fired[0].envelope.occurred_at >= asleep.sleeping_until  # type: ignore[operator]
    check_saga_invariants(bootstrap, prefix, codec, ["sleeper"])


def test_finished_saga_is_tombstoned_after_grace_and_not_restored(settings: Settings) -> None:
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    responder = Responder(bootstrap, prefix, codec).start()
    try:
        with SagaClient(settings) as client:
            orch = make(settings, tombstone_grace_s=1.0)
            thread, errors = start_thread(orch)
            try:
                client.start(Pipeline, PipeData(label="t"), saga_id="short-lived")
                done = client.wait("short-lived", timeout=30)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and orch.stats.tombstones < 1:
                    time.sleep(0.1)
            finally:
                orch.request_stop()
                thread.join(30)
            assert not errors and orch.stats.tombstones == 1
            assert client.status("short-lived") is None
            # a late duplicate reply for the finished, tombstoned saga
            late = next(
                e.input
                for e in journals(bootstrap, prefix, codec)["short-lived"]
                if isinstance(e.input, StepSucceeded)
            )
            again = make(settings, tombstone_grace_s=1.0)
            thread, errors = start_thread(again)
            try:
                producer = SignedProducer(client_producer_config(bootstrap), "worker")
                producer.produce(f"{prefix}.replies", key="short-lived", value=codec.encode(late))
                producer.flush(10)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and again.stats.dead_letters < 1:
                    time.sleep(0.1)
            finally:
                again.request_stop()
                thread.join(30)
            assert not errors
            assert again.stats.restored_sagas == 0
    finally:
        responder.stop()
    assert done.status == "completed"
    values = [
        r.value for r in read_committed(bootstrap, f"{prefix}.state") if r.key == "short-lived"
    ]
    assert values[-1] is None  # the tombstone
    terminal = codec.decode(values[-2], (SagaState,))  # type: ignore[arg-type]
    assert isinstance(terminal, SagaState) and terminal.status == "completed"
    letters = [
        codec.decode(r.value, (DeadLetter,))
        for r in read_committed(bootstrap, f"{prefix}.deadletter")
        if r.value is not None
    ]
    assert [letter.error_type for letter in letters if isinstance(letter, DeadLetter)] == [
        "UnknownSaga"
    ]
