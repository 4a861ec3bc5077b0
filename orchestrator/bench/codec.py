"""Codec throughput: ``sagaline bench codec [--seconds S]`` prints JSON.

Messages measured (single-object encoding, the default wire format):

* ``reply_1kb``: a :class:`StepSucceeded` whose result payload is 1 KiB of JSON;
* ``state_20_steps``: a :class:`SagaState` snapshot of a saga with 20 steps,
  each with a result, timestamps and idempotency keys, plus timers and an
  agent transcript (what the orchestrator writes to the compacted topic);
* ``journal_entry``: a :class:`JournalEntry` recording one reply and 4 events.

For each: encoded size, encode and decode messages/s and µs/message, and
for reference the same record through pydantic's JSON (``model_dump_json`` /
``model_validate_json``).  Each figure is the best of three timed rounds of
about ``seconds / 3`` each, single thread.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import fastavro
import pydantic

from sagaline.schemas.base import Envelope, Payload, Record, Usage
from sagaline.schemas.codec import Codec
from sagaline.schemas.events import StepCompleted, StepDispatched, StepRetryDue, UsageRecorded
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.replies import StepSucceeded
from sagaline.schemas.state import AgentHistoryItem, AgentState, SagaState, StepState, Timer

__all__ = ["run", "sample_messages"]

_T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _envelope(n: int) -> Envelope:
    return Envelope(
        message_id=f"0b0e5a7c-1d2f-4a5b-9c8d-{n:012d}",
        saga_id="refund-7f3c2a9e-4b1d-4e8f-a6c5-2d9b8e7f6a1c",
        saga_type="refund_agent",
        saga_version=3,
        occurred_at=_T0 + timedelta(seconds=n),
        causation_id=f"0b0e5a7c-1d2f-4a5b-9c8d-{n - 1:012d}",
        correlation_id="refund-7f3c2a9e-4b1d-4e8f-a6c5-2d9b8e7f6a1c",
        trace={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )


def _json_payload(type_name: str, size: int) -> Payload:
    empty = json.dumps({"summary": "", "tokens": 1234}, separators=(",", ":"))
    body = {"summary": "x" * max(0, size - len(empty)), "tokens": 1234}
    return Payload(type_name=type_name, data=json.dumps(body, separators=(",", ":")).encode())


def _reply() -> StepSucceeded:
    result = _json_payload("agents.refund.PolicyAnswer", 1024)
    assert result.data is not None and len(result.data) == 1024
    return StepSucceeded(
        envelope=_envelope(7),
        step="check_policy",
        attempt=1,
        idempotency_key="refund-7f3c2a9e:check_policy:1",
        task_id="task-0007",
        result=result,
        usage=Usage(llm_calls=1, tokens_in=2200, tokens_out=310, cost_micros=5400),
    )


def _state() -> SagaState:
    steps = {}
    for i in range(20):
        name = f"step_{i:02d}"
        steps[name] = StepState(
            name=name,
            status="succeeded" if i < 19 else "running",
            run=1,
            attempt=1 + (i % 3),
            idempotency_key=f"refund-7f3c2a9e:{name}:1",
            task_id=f"task-{i:04d}",
            compensable=i % 2 == 0,
            result=_json_payload(f"agents.refund.Result{i}", 200) if i < 19 else None,
            dispatched_at=_T0 + timedelta(seconds=i),
            deadline_at=_T0 + timedelta(seconds=i + 300),
            completed_at=_T0 + timedelta(seconds=i + 2) if i < 19 else None,
        )
    history = [
        AgentHistoryItem(turn=t, role="tool" if t % 2 else "assistant", content="y" * 120)
        for t in range(6)
    ]
    return SagaState(
        saga_id="refund-7f3c2a9e-4b1d-4e8f-a6c5-2d9b8e7f6a1c",
        saga_type="refund_agent",
        saga_version=3,
        status="running",
        data=_json_payload("agents.refund.RefundData", 600),
        node="step_19",
        node_kind="step",
        steps=steps,
        agents={"planner": AgentState(name="planner", turn=6, phase="tool", history=history)},
        timers=[
            Timer(
                timer_id="step_19:1:deadline",
                kind="step_timeout",
                due_at=_T0 + timedelta(seconds=319),
                step="step_19",
                attempt=1,
            ),
            Timer(timer_id="saga:deadline", kind="saga_deadline", due_at=_T0 + timedelta(days=1)),
        ],
        completed_compensable=[f"step_{i:02d}" for i in range(0, 19, 2)],
        usage=Usage(llm_calls=12, tokens_in=30500, tokens_out=4100, cost_micros=81000),
        started_at=_T0,
        updated_at=_T0 + timedelta(seconds=40),
        deadline_at=_T0 + timedelta(days=1),
        input_sha256="9f" * 32,
        requested_by="support@example.com",
        journal_seq=58,
        journal_hash="ab" * 32,
    )


def _journal() -> JournalEntry:
    reply = _reply()
    at = reply.envelope.occurred_at
    events: list[Any] = [
        UsageRecorded(at=at, step="check_policy", usage=reply.usage),
        StepCompleted(
            at=at, step="check_policy", attempt=1, result=reply.result, data=_json_payload("D", 300)
        ),
        StepRetryDue(at=at, step="notify", attempt=1),
        StepDispatched(
            at=at,
            step="issue_refund",
            attempt=1,
            run=1,
            idempotency_key="refund-7f3c2a9e:issue_refund:1",
            task_id="task-0008",
            compensable=True,
            deadline_at=at + timedelta(minutes=5),
        ),
    ]
    return JournalEntry(
        envelope=_envelope(8),
        seq=9,
        input_type="StepSucceeded",
        input=reply,
        events=events,
        prev_hash="cd" * 32,
        hash="ef" * 32,
    )


def sample_messages() -> dict[str, Record]:
    """The records the benchmark measures, by label."""
    return {"reply_1kb": _reply(), "state_20_steps": _state(), "journal_entry": _journal()}


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Best calls/second over three rounds of about ``seconds / 3``."""
    best = 0.0
    batch = 1
    for _ in range(3):
        deadline = time.perf_counter() + seconds / 3
        calls = 0
        start = time.perf_counter()
        while True:
            for _ in range(batch):
                fn()
            calls += batch
            now = time.perf_counter()
            if now >= deadline:
                break
            if now - start < 0.01:
                batch *= 2
        best = max(best, calls / (now - start))
    return best


def _figures(rate: float) -> dict[str, float]:
    return {"msgs_per_s": round(rate), "us_per_msg": round(1e6 / rate, 2)}


def run(seconds_per_figure: float) -> dict[str, Any]:
    codec = Codec()
    results: dict[str, Any] = {}
    for label, record in sample_messages().items():
        data = codec.encode(record)
        assert codec.decode(data) == record, label
        model = type(record)
        json_data = record.model_dump_json()
        results[label] = {
            "record": model.__name__,
            "avro_bytes": len(data),
            "json_bytes": len(json_data),
            "encode": _figures(_rate(partial(codec.encode, record), seconds_per_figure)),
            "decode": _figures(_rate(partial(codec.decode, data), seconds_per_figure)),
            "json_encode": _figures(_rate(record.model_dump_json, seconds_per_figure)),
            "json_decode": _figures(
                _rate(partial(model.model_validate_json, json_data), seconds_per_figure)
            ),
        }
    return {
        "benchmark": "sagaline.schemas.codec",
        "wire": "avro single-object encoding (fastavro schemaless)",
        "python": platform.python_version(),
        "fastavro": fastavro.__version__,
        "pydantic": pydantic.VERSION,
        "machine": platform.machine(),
        "results": results,
    }
