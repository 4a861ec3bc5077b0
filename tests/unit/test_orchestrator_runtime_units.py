"""Pure parts of the orchestrator runtime: timer wheel, topic specs, configs, core adapter."""

from __future__ import annotations

import sys
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.errors import InputRejected
from sagaline.orchestrator.runtime.kafka_config import (
    PARTITIONER,
    input_consumer_config,
    transactional_producer_config,
)
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.telemetry import (
    carrier_from_context,
    carrier_from_headers,
    context_from_carrier,
    context_from_headers,
    headers_from_carrier,
)
from sagaline.orchestrator.runtime.timers import TimerWheel
from sagaline.orchestrator.runtime.topics import TopicLayout, topic_specs
from sagaline.schemas.base import Envelope
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.payload import payload_sha256, to_payload
from sagaline.schemas.replies import StepSucceeded
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import ExecuteStep

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from orchestrator_sagas import REGISTRY, PipeData, Pipeline, Sleepy

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_wheel_fires_due_timers_in_order_and_once() -> None:
    wheel = TimerWheel()
    wheel.schedule("a", [("t1", 10.0), ("t2", 30.0)])
    wheel.schedule("b", [("t1", 20.0)])
    assert len(wheel) == 3
    assert wheel.next_due() == 10.0
    fired = wheel.pop_due(25.0)
    assert [(t.saga_id, t.timer_id) for t in fired] == [("a", "t1"), ("b", "t1")]
    assert wheel.pop_due(25.0) == []
    assert len(wheel) == 1
    assert wheel.next_due() == 30.0


def test_wheel_replaces_a_sagas_timers_and_skips_stale_entries() -> None:
    wheel = TimerWheel()
    wheel.schedule("a", [("t1", 10.0)])
    wheel.schedule("a", [("t2", 50.0)])  # t1 superseded
    assert wheel.pop_due(20.0) == []
    assert wheel.timers_of("a") == {"t2": 50.0}
    wheel.drop("a")
    assert wheel.next_due() is None
    assert len(wheel) == 0


def test_wheel_limit_leaves_the_rest_for_later() -> None:
    wheel = TimerWheel()
    for i in range(10):
        wheel.schedule(f"s{i}", [("t", float(i))])
    assert len(wheel.pop_due(100.0, limit=4)) == 4
    assert len(wheel.pop_due(100.0)) == 6


def test_wheel_stays_compact_under_rescheduling() -> None:
    wheel = TimerWheel()
    for i in range(5000):
        wheel.schedule("hot", [("t", float(i))])
    assert len(wheel) == 1
    assert len(wheel._heap) < 5000
    assert [t.due for t in wheel.pop_due(1e9)] == [4999.0]


def test_topic_specs_copartition_compact_state_and_keep_journal_forever() -> None:
    specs = {s.name: s for s in topic_specs(TopicNames("p"), TopicLayout(partitions=7))}
    names = TopicNames("p")
    assert {specs[n].partitions for n in (names.commands, names.replies, names.state)} == {7}
    assert specs[names.state].config["cleanup.policy"] == "compact"
    assert "segment.ms" in specs[names.state].config
    assert specs[names.journal].config["retention.ms"] == "-1"
    assert specs[names.journal].config["retention.bytes"] == "-1"


def test_kafka_configs_are_exactly_once() -> None:
    producer = transactional_producer_config("b:1", "orch-1")
    assert producer["transactional.id"] == "orch-1"
    assert producer["partitioner"] == PARTITIONER
    consumer = input_consumer_config("b:1", "g", instance_id="i")
    assert consumer["isolation.level"] == "read_committed"
    assert consumer["enable.auto.commit"] is False
    assert consumer["partition.assignment.strategy"] == "range"
    assert consumer["group.instance.id"] == "g-i"


def test_partition_for_is_crc32_modulo() -> None:
    assert partition_for("saga-1", 1) == 0
    keys = [f"saga-{i}" for i in range(200)]
    assert [partition_for(k, 6) for k in keys] == [zlib.crc32(k.encode()) % 6 for k in keys]
    # librdkafka's consistent_random partitioner puts these keys here (fixed values)
    assert [partition_for(f"saga-{i}", 6) for i in range(8)] == [1, 1, 1, 5, 4, 2, 0, 0]
    assert {partition_for(f"k{i}", 6) for i in range(200)} == set(range(6))
    assert partition_for("x", 6) == partition_for(b"x", 6)
    with pytest.raises(ValueError):
        partition_for("x", 0)


def test_trace_headers_round_trip() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        carrier = carrier_from_context()
    headers = headers_from_carrier(carrier)
    assert carrier_from_headers(headers) == carrier
    ctx = context_from_headers(headers)
    assert ctx is not None
    assert context_from_headers([("other", b"x")]) is None
    assert carrier["traceparent"].split("-")[1] == f"{span.get_span_context().trace_id:032x}"


def test_without_an_sdk_tracer_the_parent_carrier_is_what_a_no_op_span_passes_on() -> None:
    """The engine skips a decision's span when ``records_spans`` is false and sends its
    tasks the parent's carrier: exactly what the no-op span would have carried."""
    from opentelemetry import trace

    from sagaline.orchestrator.runtime.telemetry import records_spans

    proxy = trace.ProxyTracer("sagaline.test")
    assert not records_spans(proxy) and not records_spans(trace.NoOpTracer())
    assert records_spans(TracerProvider().get_tracer("t"))
    incoming = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=abc",
    }
    parent = context_from_carrier(incoming)
    assert parent is not None
    with proxy.start_as_current_span("decide", context=parent):
        through_span = carrier_from_context()
    assert carrier_from_context(parent) == through_span == incoming
    with proxy.start_as_current_span("decide", context=None):
        assert carrier_from_context() == {}  # no parent: nothing, as the fast path sends


def _start(saga_id: str, saga_type: str = Pipeline.type_name) -> StartSaga:
    payload = to_payload(PipeData(label="u"))
    return StartSaga(
        envelope=Envelope(
            message_id=f"m-{saga_id}", saga_id=saga_id, saga_type=saga_type, occurred_at=NOW
        ),
        data=payload,
        input_sha256=payload_sha256(payload),
    )


def test_core_logic_decides_journals_and_dispatches() -> None:
    logic = CoreLogic(REGISTRY)
    outcome = logic.decide(None, _start("u1"))
    state = outcome.state
    assert isinstance(state, SagaState) and state.saga_id == "u1"
    assert [type(e) for e in outcome.journal] == [JournalEntry]
    assert state.journal_seq == 1
    [task] = [o.record for o in outcome.outgoing]
    assert isinstance(task, ExecuteStep) and task.step == "s1"
    reply = StepSucceeded(
        envelope=Envelope(message_id="r1", saga_id="u1", saga_type="", occurred_at=NOW),
        step="s1",
        attempt=task.attempt,
        idempotency_key=task.idempotency_key,
        task_id=task.task_id,
    )
    after = logic.decide(state, reply)
    assert isinstance(after.state, SagaState) and after.state.journal_seq == 2
    # a duplicate of the same reply is ignored: nothing dispatched again
    dup = logic.decide(after.state, reply)
    assert not [o for o in dup.outgoing if isinstance(o.record, ExecuteStep)]


def test_core_logic_rejects_unknown_sagas_and_types() -> None:
    logic = CoreLogic(REGISTRY)
    reply = StepSucceeded(
        envelope=Envelope(message_id="r", saga_id="ghost", saga_type="", occurred_at=NOW),
        step="s1",
        attempt=1,
        idempotency_key="k",
        task_id="t",
    )
    with pytest.raises(InputRejected) as unknown:
        logic.decide(None, reply)
    assert unknown.value.error_type == "UnknownSaga"
    with pytest.raises(InputRejected) as bad_type:
        logic.decide(None, _start("u2", saga_type="no.such.saga"))
    assert bad_type.value.error_type == "UnknownSagaType"


def test_core_logic_timers_come_from_state() -> None:
    logic = CoreLogic(REGISTRY)
    state = logic.decide(None, _start("sl", Sleepy.type_name)).state
    timers = logic.timers(state)
    assert timers and all(t.due_at > NOW for t in timers)
    fired = logic.timer_input(state, timers[0].timer_id, NOW + timedelta(hours=1))
    assert fired is not None
    assert logic.timer_input(state, "no-such-timer", NOW) is None
    assert not logic.is_terminal(state)


def test_avro_codec_round_trips_state() -> None:
    codec = AvroCodec()
    state = CoreLogic(REGISTRY).decide(None, _start("c1")).state
    assert codec.decode(codec.encode(state), (SagaState,)) == state
