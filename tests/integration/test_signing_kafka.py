"""Signed commands, replies, tasks and state on real Kafka (issue 13, item 3).

* a forged ``StepSucceeded`` — unsigned, signed by the client key, or signed by a worker
  for a task never dispatched — never completes a step and is dead-lettered with the
  reason; the worker's genuine reply then completes it;
* a ``CompensateStep`` written to the tasks topic by a non-orchestrator principal (or
  unsigned) is refused by the worker: dead-lettered, never run;
* an approval signed by someone who may not approve the saga type is dead-lettered; the
  approver's is accepted and recorded under the verified signer, not the ``by`` it claims;
* a forged snapshot and a forged tombstone on the state topic are skipped on restore, also
  when the forged snapshot carries the hints that let restore leave a snapshot unread.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer
from orchestrator_sagas import REGISTRY, Approved, PipeData, Pipeline
from orchestrator_support import Responder, Running, delete_prefix_topics, read_committed

from sagaline.consumers.migrations import migrate
from sagaline.consumers.relay import Relay, RelayOptions
from sagaline.consumers.worker import Worker, WorkerOptions
from sagaline.orchestrator.chaos.effects import (
    EffectArgs,
    compensate_task,
    create_effect_tables,
    create_topics,
    delete_topics,
    effects_table,
    execute_task,
    produce_tasks,
    read_records,
)
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.kafka_config import client_producer_config
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.signing_inputs import STATE_REFUSED
from sagaline.orchestrator.runtime.signing_runtime import (
    SignedProducer,
    reset_signing,
    signer_for,
)
from sagaline.orchestrator.runtime.snapshots import LazySnapshot, snapshot_headers
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.replies import REPLY_TYPES, StepSucceeded
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import ExecuteStep

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture
def signing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Signing on, with the session keyring (tests/conftest.py), approvers of test.approved."""
    keys = Path(os.environ["SAGALINE_KEYS_DIR"])
    monkeypatch.setenv("SAGALINE_SIGNING", "true")
    monkeypatch.setenv("SAGALINE_APPROVERS", '{"test.approved": ["admin"]}')
    monkeypatch.delenv("SAGALINE_SIGNER", raising=False)
    reset_signing()
    yield keys
    reset_signing()


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str, signing: Path) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-sig")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=PARTITIONS))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


def _running(settings: Settings, instance: str = "a") -> Running:
    """An orchestrator on a thread for the duration of a ``with`` block."""
    config = EngineConfig(instance_id=instance, group_id=f"{settings.topics.prefix}-orch")
    return Running(Orchestrator(settings, CoreLogic(REGISTRY), config, codec=AvroCodec()))


def _until(what: str, check: Callable[[], object], timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _letters(settings: Settings) -> list[DeadLetter]:
    codec = AvroCodec()
    out = []
    for rec in read_committed(settings.kafka_bootstrap_servers, settings.topics.deadletter):
        if rec.value is not None:
            letter = codec.decode(rec.value, (DeadLetter,))
            assert isinstance(letter, DeadLetter)
            out.append(letter)
    return out


def _send(settings: Settings, topic: str, key: str, value: bytes, signer: str | None) -> None:
    config = client_producer_config(settings.kafka_bootstrap_servers)
    producer = Producer(config) if signer is None else SignedProducer(config, signer)
    producer.produce(topic, key=key.encode(), value=value, partition=partition_for(key, PARTITIONS))
    assert producer.flush(30) == 0


def test_forged_replies_never_complete_a_step(settings: Settings) -> None:
    codec, topics = AvroCodec(), settings.topics
    with _running(settings), SagaClient(settings) as client:
        handle = client.start(Pipeline, PipeData(label="x"), saga_id="forged-1")
        task = _until(
            "the first task",
            lambda: next(
                (
                    t
                    for r in read_committed(settings.kafka_bootstrap_servers, topics.tasks)
                    if r.value
                    and isinstance(t := codec.decode(r.value, (ExecuteStep,)), ExecuteStep)
                ),
                None,
            ),
        )
        assert isinstance(task, ExecuteStep) and task.step == "s1"
        forged = codec.encode(StepSucceeded.for_task(task))
        _send(settings, topics.replies, "forged-1", forged, None)  # unsigned
        _send(settings, topics.replies, "forged-1", forged, "client")  # the client's key
        future = task.model_copy(update={"attempt": 7, "task_id": "forged-1/s1/1/7"})
        _send(
            settings,
            topics.replies,
            "forged-1",
            codec.encode(StepSucceeded.for_task(future)),
            "worker",
        )
        letters = _until(
            "three dead letters", lambda: (ls := _letters(settings)) and len(ls) >= 3 and ls
        )
        assert isinstance(letters, list)
        by_type = {letter.error_type: letter for letter in letters}
        assert set(by_type) == {"Unsigned", "WrongSigner", "NeverDispatched"}
        assert "'client'" in by_type["WrongSigner"].reason
        assert "never dispatched" in by_type["NeverDispatched"].reason
        state = client.status("forged-1")
        # not completed (running, or waiting to retry if its timeout passed meanwhile)
        assert state is not None and state.steps["s1"].status in ("running", "retry_wait")
        assert "s2" not in state.steps
        # the genuine reply (signed by a worker) completes the saga
        responder = Responder(settings.kafka_bootstrap_servers, topics.prefix, codec).start()
        try:
            assert handle.wait(timeout=60).status == "completed"
        finally:
            responder.stop()
    assert len(_letters(settings)) == 3


def test_an_approval_from_a_non_approver_is_refused(settings: Settings) -> None:
    codec, topics = AvroCodec(), settings.topics
    responder = Responder(settings.kafka_bootstrap_servers, topics.prefix, codec).start()
    try:
        with _running(settings), SagaClient(settings) as admin:
            handle = admin.start(Approved, PipeData(label="x"), saga_id="approve-1")
            _until(
                "the approval",
                lambda: (
                    (s := admin.status("approve-1"))
                    and any(w.name == "manager_ok" for w in s.waits)
                ),
            )
            env = {"SAGALINE_SIGNER": "client"}
            with pytest.MonkeyPatch.context() as patch:
                for k, v in env.items():
                    patch.setenv(k, v)
                reset_signing()
                with SagaClient(settings) as client:
                    client.approve("approve-1", Approved.manager_ok, by="ceo@victim.example")
            reset_signing()
            letters = _until("the refusal", lambda: _letters(settings))
            assert isinstance(letters, list)
            assert [letter.error_type for letter in letters] == ["NotApprover"]
            assert "'client' may not approve" in letters[0].reason
            state = admin.status("approve-1")
            assert state is not None and any(w.name == "manager_ok" for w in state.waits)
            admin.approve("approve-1", Approved.manager_ok, by="cfo@victim.example")
            final = handle.wait(timeout=60)
    finally:
        responder.stop()
    assert final.status == "completed"
    journal = read_committed(settings.kafka_bootstrap_servers, topics.journal)
    text = b"".join(r.value or b"" for r in journal if r.key == "approve-1")
    assert b"ceo@victim.example" not in text  # the refused approval never reached it
    assert b"admin for cfo@victim.example" in text  # the verified signer, then the claim


@pytest.fixture
def worker_env(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, signing: Path
) -> Iterator[tuple[TopicNames, str]]:
    schema = f"t_wsig_{uuid.uuid4().hex[:10]}"
    migrate(database_url, schema)
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_effect_tables(conn, f"{schema}.effects")
    names = TopicNames(topic_prefix)
    create_topics(kafka_bootstrap, names)
    yield names, schema
    delete_topics(kafka_bootstrap, names)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_worker_refuses_a_compensation_not_signed_by_the_orchestrator(
    database_url: str, kafka_bootstrap: str, worker_env: tuple[TopicNames, str]
) -> None:
    topics, schema = worker_env
    codec = AvroCodec()
    undo = compensate_task("w-1", "write", EffectArgs(amount=5))
    for signer in (None, "client", "worker"):
        config = client_producer_config(kafka_bootstrap)
        producer = Producer(config) if signer is None else SignedProducer(config, signer)
        producer.produce(topics.tasks, key=b"w-1", value=codec.encode(undo))
        assert producer.flush(30) == 0
    genuine = execute_task("w-1", "write", EffectArgs(amount=1))
    produce_tasks(kafka_bootstrap, topics.tasks, [genuine])  # signed as the orchestrator
    stop = threading.Event()
    worker = Worker(
        bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
        resolver=effects_table(database_url, f"{schema}.effects"),
        options=WorkerOptions(group_id=f"g-{uuid.uuid4().hex[:8]}", schema=schema),
    )
    relay = Relay(database_url, kafka_bootstrap, RelayOptions(schema=schema, poll_interval=0.5))
    threads = [
        threading.Thread(target=worker.run, args=(stop,)),
        threading.Thread(target=relay.run, args=(stop,)),
    ]
    for t in threads:
        t.start()
    try:
        replies = read_records(
            kafka_bootstrap,
            topics.replies,
            REPLY_TYPES,
            until=lambda rs: any(getattr(r, "task_id", "") == genuine.task_id for r in rs),
            timeout=60,
        )
        letters = read_records(
            kafka_bootstrap, topics.deadletter, (DeadLetter,), until=lambda rs: len(rs) >= 3
        )
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        relay.close()
    assert [getattr(r, "task_id", "") for r in replies] == [genuine.task_id]
    kinds = sorted(getattr(letter, "error_type", "") for letter in letters)
    assert kinds == ["Unsigned", "WrongSigner", "WrongSigner"]
    assert all("CompensateStep" in getattr(letter, "reason", "") for letter in letters)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {schema}.effects").fetchone()
    assert rows is not None and rows[0] == 1  # the genuine write; no compensation ran
    assert worker.stats.dead_lettered == 3


def test_forged_state_records_are_not_restored(settings: Settings) -> None:
    codec, topics = AvroCodec(), settings.topics
    responder = Responder(settings.kafka_bootstrap_servers, topics.prefix, codec).start()
    try:
        with _running(settings), SagaClient(settings) as client:
            client.start(Approved, PipeData(label="keep"), saga_id="keep-1")
            client.start(Approved, PipeData(label="keep"), saga_id="keep-2")
            for saga_id in ("keep-1", "keep-2"):
                _until(
                    "the approval",
                    lambda s=saga_id: (
                        (st := client.status(s)) and any(w.name == "manager_ok" for w in st.waits)
                    ),
                )
            genuine = client.status("keep-2")
    finally:
        responder.stop()
    assert isinstance(genuine, SagaState)
    # forged while the orchestrator is down: a tombstone for keep-1 (signed by the client)
    # and a "completed" snapshot of keep-2 (unsigned)
    forged = genuine.model_copy(update={"status": "completed", "waits": []})
    before = sum(
        s.value for m in STATE_REFUSED.collect() for s in m.samples if s.name.endswith("_total")
    )
    p1, p2 = partition_for("keep-1", PARTITIONS), partition_for("keep-2", PARTITIONS)
    tomb = SignedProducer(client_producer_config(settings.kafka_bootstrap_servers), "client")
    tomb.produce(topics.state, key=b"keep-1", value=None, partition=p1)
    assert tomb.flush(30) == 0
    raw = Producer(client_producer_config(settings.kafka_bootstrap_servers))
    raw.produce(topics.state, key=b"keep-2", value=codec.encode(forged), partition=p2)
    assert raw.flush(30) == 0
    with _running(settings, instance="b") as running:
        _until("the restore", lambda: running.orch.owned_partitions)
        active = running.orch.active_sagas()
    after = sum(
        s.value for m in STATE_REFUSED.collect() for s in m.samples if s.name.endswith("_total")
    )
    assert active == 2  # both sagas restored from their genuine snapshots
    assert after - before == 2


def test_a_forged_snapshot_with_hints_is_refused_and_the_genuine_one_left_unread(
    settings: Settings,
) -> None:
    """Restore leaves an active snapshot unread when its hints authenticate (issue 11,
    goal 8).  A forged one (signed by a worker, its hints MACed under the worker's key)
    does not: restore verifies it at once, refuses it and keeps the saga's last genuine
    snapshot, itself left unread; the approval then completes the saga from it."""
    codec, topics = AvroCodec(), settings.topics
    responder = Responder(settings.kafka_bootstrap_servers, topics.prefix, codec).start()
    try:
        with _running(settings), SagaClient(settings) as client:
            client.start(Approved, PipeData(label="lazy"), saga_id="lazy-1")
            _until(
                "the approval",
                lambda: (
                    (st := client.status("lazy-1"))
                    and any(w.name == "manager_ok" for w in st.waits)
                ),
            )
            genuine = client.status("lazy-1")
        assert isinstance(genuine, SagaState)
        # while the orchestrator is down: a snapshot without the approval wait and
        # without timers ("never load me"), with hints, signed by the worker
        forged = genuine.model_copy(update={"waits": [], "timers": [], "status": "running"})
        p = partition_for("lazy-1", PARTITIONS)
        worker = signer_for("worker")
        assert worker is not None
        value = codec.encode(forged)
        hints = snapshot_headers(
            CoreLogic(REGISTRY),
            forged,
            topics.state,
            b"lazy-1",
            value,
            worker.derive(b"state-hints"),
        )
        producer = SignedProducer(client_producer_config(settings.kafka_bootstrap_servers), worker)
        producer.produce(topics.state, key=b"lazy-1", value=value, partition=p, headers=hints)
        assert producer.flush(30) == 0
        before = _refused_total()
        with _running(settings, instance="b") as running, SagaClient(settings) as client:
            _until("the restore", lambda: running.orch.owned_partitions)
            assert _refused_total() - before == 1  # the forgery, at restore
            restored = running.orch._owned[p].active["lazy-1"]
            assert isinstance(restored, LazySnapshot)  # the genuine snapshot, unread
            assert restored.approvals == 1 and restored.due is not None
            client.approve("lazy-1", Approved.manager_ok, by="cfo@example.com")
            final = _until(
                "the saga's end",
                lambda: (st := client.status("lazy-1")) and st.is_terminal and st,
            )
    finally:
        responder.stop()
    assert isinstance(final, SagaState) and final.status == "completed"
    assert _refused_total() - before == 1


def _refused_total() -> float:
    return sum(
        s.value for m in STATE_REFUSED.collect() for s in m.samples if s.name.endswith("_total")
    )
