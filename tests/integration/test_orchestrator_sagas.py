"""Real saga definitions through the orchestrator, the SagaClient and real Kafka."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from orchestrator_sagas import REGISTRY, Approved, PipeData, Pipeline
from orchestrator_support import (
    Responder,
    Running,
    check_saga_invariants,
    delete_prefix_topics,
    read_committed,
)

from sagaline.orchestrator.client import SagaAlreadyStarted, SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.kafka_config import client_producer_config
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.deadletter import DeadLetter

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-sagas")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=3))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


def orchestrator(settings: Settings, instance: str = "a") -> Orchestrator:
    config = EngineConfig(instance_id=instance, group_id=f"{settings.topics.prefix}-orch")
    return Orchestrator(settings, CoreLogic(REGISTRY), config, codec=AvroCodec())


def test_many_sagas_complete_and_journal_folds_to_state(settings: Settings) -> None:
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    responder = Responder(bootstrap, prefix, codec).start()
    ids = [f"pipe-{i}" for i in range(30)]
    try:
        with Running(orchestrator(settings)), SagaClient(settings) as client:
            handles = [
                client.start(Pipeline, PipeData(label=i), saga_id=i, check_existing=False)
                for i in ids
            ]
            finals = [h.wait(timeout=60) for h in handles]
    finally:
        responder.stop()
    assert responder.error is None
    assert {s.status for s in finals} == {"completed"}
    states = check_saga_invariants(bootstrap, prefix, codec, ids)
    # every step is in the snapshot or counted among the retired ones (live-state snapshots)
    assert all(len(states[i].steps) + states[i].steps_retired == 5 for i in ids)
    assert all(states[i].steps_retired > 0 for i in ids)


def test_start_is_idempotent_by_saga_id(settings: Settings) -> None:
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    responder = Responder(bootstrap, prefix, codec).start()
    try:
        with Running(orchestrator(settings)), SagaClient(settings) as client:
            first = client.start(Pipeline, PipeData(label="x"), saga_id="same-id")
            done = first.wait(timeout=60)
            again = client.start(Pipeline, PipeData(label="x"), saga_id="same-id")
            assert again.saga_id == "same-id"
            with pytest.raises(SagaAlreadyStarted):
                client.start(Pipeline, PipeData(label="other"), saga_id="same-id")
            # a raw duplicate start that skips the client-side check changes nothing
            racing = client.start(
                Pipeline, PipeData(label="other"), saga_id="same-id", check_existing=False
            )
            with pytest.raises(SagaAlreadyStarted):
                client.confirm_start(racing, PipeData(label="other"), timeout=30)
            assert client.status("same-id") is not None
    finally:
        responder.stop()
    tasks = [r for r in read_committed(bootstrap, f"{prefix}.tasks") if r.key == "same-id"]
    assert len(tasks) == 5  # five steps, each dispatched once, despite three starts
    assert done.status == "completed"


def test_approve_and_reject_with_identity(settings: Settings) -> None:
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    responder = Responder(bootstrap, prefix, codec).start()
    try:
        with Running(orchestrator(settings)), SagaClient(settings) as client:
            ok = client.start(Approved, PipeData(label="ok"), saga_id="approve-me")
            no = client.start(Approved, PipeData(label="no"), saga_id="reject-me")
            for h in (ok, no):
                _wait_for(client, h.saga_id, lambda s: any(w.name == "manager_ok" for w in s.waits))
            client.approve("approve-me", Approved.manager_ok, by="alice@example.com", note="fine")
            client.reject("reject-me", "manager_ok", by="bob@example.com", note="fraud")
            approved, rejected = ok.wait(60), no.wait(60)
    finally:
        responder.stop()
    assert approved.status == "completed"
    assert rejected.status == "compensated"
    assert rejected.steps["reserve"].compensation_status == "compensated"
    check_saga_invariants(bootstrap, prefix, codec, ["approve-me", "reject-me"])


def test_reply_for_unknown_saga_is_dead_lettered(settings: Settings) -> None:

    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    responder = Responder(bootstrap, prefix, codec).start()
    try:
        with Running(orchestrator(settings)), SagaClient(settings) as client:
            client.signal("never-started", "manager_ok", by="mallory", approved=True)
            producer = SignedProducer(client_producer_config(bootstrap), "worker")
            producer.produce(f"{prefix}.replies", key="garbage", value=b"\xc3\x01garbage")
            producer.flush(10)
            h = client.start(Pipeline, PipeData(label="after"), saga_id="after-poison")
            assert h.wait(60).status == "completed"
    finally:
        responder.stop()
    letters = [
        codec.decode(r.value, (DeadLetter,))
        for r in read_committed(bootstrap, f"{prefix}.deadletter")
        if r.value is not None
    ]
    by_key = {letter.key: letter for letter in letters if isinstance(letter, DeadLetter)}
    assert by_key[b"never-started"].error_type == "UnknownSaga"
    assert by_key[b"garbage"].source_topic == f"{prefix}.replies"
    assert by_key[b"garbage"].reason


def _wait_for(client: SagaClient, saga_id: str, predicate: object, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.status(saga_id)
        if state is not None and predicate(state):  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"{saga_id} never reached the expected state")
