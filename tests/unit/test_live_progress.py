"""Live progress without a broker: the record, the publisher's bounds, the step contexts,
the topic and its ACLs, the stream's modes and ``sagaline watch``'s lines."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from sagaline.consumers.context import WorkerStepContext
from sagaline.consumers.progress import TaskProgress
from sagaline.orchestrator.cli.watch_cmds import WatchPrinter
from sagaline.orchestrator.client.stream import StreamEvent, check_modes
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.testing import TestStepContext
from sagaline.orchestrator.runtime.acls import acl_bindings
from sagaline.orchestrator.runtime.progress import ProgressPublisher
from sagaline.orchestrator.runtime.topics import TopicLayout, topic_specs
from sagaline.schemas.base import Envelope, Payload
from sagaline.schemas.codec import default_codec
from sagaline.schemas.progress import MAX_PROGRESS_TEXT, ProgressReported
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import ExecuteStep

pytestmark = pytest.mark.unit

AT = datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC)
#: nothing listens here: the producer only queues
NOWHERE = "127.0.0.1:1"


def _task() -> ExecuteStep:
    return ExecuteStep(
        envelope=Envelope(
            message_id="m-1", saga_id="s-1", saga_type="digest", saga_version=1, occurred_at=AT
        ),
        step="draft",
        attempt=2,
        idempotency_key="s-1/draft",
        task_id="s-1/draft/2",
        args=Payload(type_name="x", data=b"{}"),
    )


def _record(**fields: object) -> ProgressReported:
    base: dict[str, object] = {
        "saga_id": "s-1",
        "saga_type": "digest",
        "step": "draft",
        "attempt": 1,
        "task_id": "t-1",
        "seq": 1,
        "at": AT,
    }
    return ProgressReported.model_validate({**base, **fields})


def test_a_progress_record_round_trips_through_the_codec() -> None:
    record = _record(message="read 1 of 3", fraction=1 / 3, partial="Sagas ")
    codec = default_codec()
    assert codec.decode(codec.encode(record), (ProgressReported,)) == record


def test_a_full_buffer_drops_progress_and_never_raises() -> None:
    publisher = ProgressPublisher(NOWHERE, "p.progress", default_codec(), buffer=2)
    try:
        sent = [publisher.publish(_record(seq=n)) for n in range(1, 6)]
        assert sent == [True, True, False, False, False]
        assert (publisher.stats.published, publisher.stats.dropped) == (2, 3)
        assert publisher.flush(0.05) == 2  # bounded: the two stay queued
    finally:
        publisher.close(timeout=0)
    assert publisher.publish(_record()) is False  # closed: dropped quietly


def test_task_progress_numbers_cuts_and_refuses_a_bad_fraction() -> None:
    publisher = ProgressPublisher(NOWHERE, "p.progress", default_codec(), buffer=10)
    sink = TaskProgress(publisher, _task())
    try:
        sink("reading", 0.5, None)
        sink(None, None, "x" * (MAX_PROGRESS_TEXT + 10))
        assert sink.sent == 2 and publisher.stats.published == 2
        with pytest.raises(ValueError, match="between 0 and 1"):
            sink("too far", 1.5, None)
        with pytest.raises(ValueError, match="needs a message"):
            sink(None, None, None)
        assert publisher.stats.published == 2
    finally:
        publisher.close(timeout=0)


def test_worker_context_publishes_through_its_sink_and_settles() -> None:
    calls: list[tuple[str | None, float | None, str | None]] = []

    class Sink:
        settled = 0

        def __call__(
            self, message: str | None, fraction: float | None, partial: str | None
        ) -> None:
            calls.append((message, fraction, partial))

        def settle(self) -> None:
            Sink.settled += 1

    ctx = WorkerStepContext(
        saga_id="s-1",
        saga_type="digest",
        step="draft",
        attempt=1,
        idempotency_key="k",
        task_id="t",
        kind="step",
        deadline=None,
        db=None,
        progress_sink=Sink(),
    )
    assert isinstance(ctx, StepContext)
    ctx.progress("half", fraction=0.5)
    ctx.progress(partial="tok")
    ctx.settle_progress()
    assert calls == [("half", 0.5, None), (None, None, "tok")]
    assert ctx.fraction == 0.5 and Sink.settled == 1
    bare = WorkerStepContext(
        saga_id="s", saga_type="t", step="a", attempt=1, idempotency_key="k",
        task_id="t", kind="step", deadline=None, db=None,
    )  # fmt: skip
    bare.progress("no sink: nothing happens")
    bare.settle_progress()


def test_the_test_kit_context_records_progress() -> None:
    ctx = TestStepContext(saga_id="s", saga_type="t", step="a", attempt=1, idempotency_key="k")
    assert isinstance(ctx, StepContext)
    ctx.progress("one", 0.25)
    ctx.progress(partial="chunk")
    assert ctx.progress_items == [("one", 0.25, None), (None, None, "chunk")]
    with pytest.raises(ValueError):
        ctx.progress(fraction=-0.1)


def test_the_progress_topic_is_short_lived_keyed_like_the_others_and_optional() -> None:
    names = TopicNames("p")
    specs = {s.name: s for s in topic_specs(names, TopicLayout(partitions=5))}
    spec = specs["p.progress"]
    assert names.progress in names.all()
    assert spec.partitions == 5 and spec.optional
    assert spec.config == {"cleanup.policy": "delete", "retention.ms": "3600000"}
    core = (names.commands, names.replies, names.tasks, names.state, names.journal)
    assert not any(specs[n].optional for n in (*core, names.deadletter))


def test_workers_and_the_orchestrator_write_progress_clients_and_the_console_read_it() -> None:
    def ops(principal: str) -> set[str]:
        return {
            b.operation.name
            for b in acl_bindings(TopicNames("p"))
            if b.name == "p.progress" and b.principal == f"User:{principal}"
        }

    assert "WRITE" in ops("worker") and "WRITE" in ops("orchestrator")
    assert "READ" in ops("client") and "READ" in ops("console") and "READ" in ops("auditor")
    assert "WRITE" not in ops("client") and "WRITE" not in ops("relay")


def test_stream_modes_are_checked() -> None:
    check_modes(("state", "progress"))
    check_modes(["progress"])
    with pytest.raises(ValueError, match="stream modes are state, progress"):
        check_modes(["values"])
    with pytest.raises(ValueError):
        check_modes([])


def _state(status: str, node: str | None, seq: int) -> SagaState:
    return SagaState.model_validate(
        {
            "saga_id": "s-1",
            "saga_type": "digest",
            "saga_version": 1,
            "status": status,
            "data": {"type_name": "x", "data": b"{}"},
            "node": node,
            "node_kind": "step" if node else None,
            "started_at": AT,
            "updated_at": AT,
            "finished_at": AT if status == "completed" else None,
            "input_sha256": "0" * 64,
            "journal_seq": seq,
        }
    )


def test_watch_prints_states_progress_and_partial_output_on_one_line() -> None:
    out = io.StringIO()
    printer = WatchPrinter(out, as_json=False)
    events = [
        StreamEvent("state", "s-1", state=_state("running", "draft", 1)),
        StreamEvent("progress", "s-1", progress=_record(message="reading", fraction=0.0)),
        StreamEvent("progress", "s-1", progress=_record(seq=2, partial="Sagas ")),
        StreamEvent("progress", "s-1", progress=_record(seq=3, partial="survive.")),
        StreamEvent("state", "s-1", state=_state("completed", None, 2)),
    ]
    for event in events:
        printer.event(event)
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "12:00:05  [running] at draft (step)",
        "12:00:05  draft   0%  reading",
        "12:00:05  draft > Sagas survive.",
    ]
    assert lines[3] == "s-1  [digest v1]  completed"
    assert events[-1].final and not events[0].final


def test_watch_json_is_one_object_per_line() -> None:
    out = io.StringIO()
    printer = WatchPrinter(out, as_json=True)
    printer.event(StreamEvent("progress", "s-1", progress=_record(message="m", fraction=1.0)))
    printer.event(StreamEvent("state", "s-1", state=_state("completed", None, 2)))
    items = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [i["mode"] for i in items] == ["progress", "state"]
    assert items[0]["message"] == "m" and items[0]["fraction"] == 1.0
    assert items[1]["status"] == "completed"
