"""``SagaClient``: start sagas, signal and steer them, read their status, wait for them.

Every call writes one Avro command record to the commands topic, keyed by
the saga id (so one saga's commands stay in order and land in the
partition of its state).  Any producer that writes the same Avro record to
the same partition can do the same; nothing here is privileged.

Status and results are read from the compacted state topic: the snapshot
of a saga is the latest value for its key in partition
``partition_for(saga_id, partitions)``.  That read is exact (read_committed,
to the last stable offset) and needs no extra store; its cost is a scan of
one compacted partition, so hot dashboards should read a projection.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from opentelemetry.trace import SpanKind, Tracer
from pydantic import BaseModel

from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.core.decider import derive_message_id
from sagaline.orchestrator.core.errors import OrchestratorError
from sagaline.orchestrator.core.saga import Node, Saga
from sagaline.orchestrator.runtime.core import AvroCodec
from sagaline.orchestrator.runtime.kafka_config import client_producer_config, reader_config
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.ports import Codec
from sagaline.orchestrator.runtime.restore import watermarks
from sagaline.orchestrator.runtime.telemetry import (
    carrier_from_context,
    get_tracer,
    headers_from_carrier,
)
from sagaline.orchestrator.runtime.topics import partition_count
from sagaline.schemas.base import Envelope, Payload, Record
from sagaline.schemas.commands import (
    CancelSaga,
    PauseSaga,
    ResumeSaga,
    RetryStep,
    SignalSaga,
    SkipStep,
    StartSaga,
)
from sagaline.schemas.payload import payload_sha256, to_payload
from sagaline.schemas.state import SagaState

__all__ = [
    "SagaAlreadyStarted",
    "SagaClient",
    "SagaHandle",
    "SagaNotFound",
    "WaitTimeout",
]


class SagaAlreadyStarted(OrchestratorError):
    """A saga with this id exists and was started with different input."""

    def __init__(self, saga_id: str, existing_sha256: str, requested_sha256: str) -> None:
        super().__init__(
            f"saga {saga_id!r} was already started with different input "
            f"(recorded input sha256 {existing_sha256[:12]}…, this start {requested_sha256[:12]}…)"
        )
        self.saga_id = saga_id
        self.existing_sha256 = existing_sha256
        self.requested_sha256 = requested_sha256


class SagaNotFound(OrchestratorError):
    """No snapshot of this saga exists on the state topic."""


class WaitTimeout(OrchestratorError):
    """The saga did not reach a terminal status in time."""


@dataclass(frozen=True)
class SagaHandle:
    """A started saga: its id and shortcuts to the client's calls."""

    client: SagaClient
    saga_id: str
    saga_type: str

    def status(self) -> SagaState | None:
        """The latest snapshot (``None`` until the orchestrator has decided the start)."""
        return self.client.status(self.saga_id)

    def wait(self, timeout: float = 60.0) -> SagaState:
        """Block until the saga is terminal; return its final snapshot."""
        return self.client.wait(self.saga_id, timeout=timeout)


def _check(err: KafkaError) -> None:
    """Raise for a fatal consumer error; transient ones (EOF, leader moves) are retried."""
    if err.fatal():
        raise KafkaException(err)


def _wait_name(wait: str | Node) -> str:
    return wait.name if isinstance(wait, Node) else wait


class SagaClient:
    """Writes commands for sagas and reads their snapshots (owns one idempotent producer)."""

    def __init__(
        self,
        settings: Settings,
        *,
        codec: Codec | None = None,
        client_id: str = "sagaline-client",
        tracer: Tracer | None = None,
    ) -> None:
        self.settings = settings
        self.names = settings.topics
        self.codec: Codec = codec or AvroCodec()
        self.client_id = client_id
        self._producer = Producer(client_producer_config(settings.kafka_bootstrap_servers))
        self._partitions: int | None = None
        self._tracer = tracer or get_tracer()

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Deliver what is queued."""
        self._producer.flush(30)

    def __enter__(self) -> SagaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing commands --------------------------------------------------------

    def _envelope(self, saga_id: str, saga_type: str, version: int, message_id: str) -> Envelope:
        return Envelope(
            message_id=message_id,
            saga_id=saga_id,
            saga_type=saga_type,
            saga_version=version,
            occurred_at=datetime.now(UTC),
            correlation_id=saga_id,
        )

    def _send(self, record: Record, saga_id: str, *, flush: bool = True) -> None:
        """Produce ``record`` to the commands topic inside a PRODUCER span."""
        with self._tracer.start_as_current_span(
            f"send {self.names.commands}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": self.names.commands,
                "sagaline.saga_id": saga_id,
                "sagaline.command": type(record).__name__,
            },
        ):
            carrier = carrier_from_context()
            envelope: Envelope = record.envelope  # type: ignore[attr-defined]
            record = record.model_copy(
                update={"envelope": envelope.model_copy(update={"trace": carrier})}
            )
            errors: list[KafkaError] = []

            def delivered(err: KafkaError | None, _msg: Any) -> None:
                if err is not None:
                    errors.append(err)

            self._producer.produce(
                self.names.commands,
                key=saga_id.encode("utf-8"),
                value=self.codec.encode(record),
                headers=headers_from_carrier(carrier) or None,
                on_delivery=delivered,
            )
            if flush:
                self._producer.flush(30)
                if errors:
                    raise KafkaException(errors[0])

    def start(
        self,
        saga: type[Saga[Any]] | str,
        data: BaseModel | Payload,
        *,
        saga_id: str | None = None,
        version: int | None = None,
        requested_by: str | None = None,
        deadline_at: datetime | None = None,
        check_existing: bool = True,
        flush: bool = True,
    ) -> SagaHandle:
        """Start a saga; idempotent by ``saga_id``.

        The same id with the same input is a no-op that returns a handle; the
        same id with different input raises :class:`SagaAlreadyStarted` (checked
        against the state topic when ``check_existing``; two racing starts are
        settled by the orchestrator, which keeps the first and journals the
        second as a conflict — :meth:`confirm_start` tells the loser).
        """
        if isinstance(saga, str):
            saga_type, saga_version = saga, version or 1
        else:
            saga_type, saga_version = saga.type_name, version or saga.version
        payload = data if isinstance(data, Payload) else to_payload(data)
        digest = payload_sha256(payload)
        sid = saga_id or str(uuid.uuid4())
        if check_existing and saga_id is not None:
            existing = self.status(sid)
            if existing is not None:
                if existing.input_sha256 != digest:
                    raise SagaAlreadyStarted(sid, existing.input_sha256, digest)
                return SagaHandle(self, sid, existing.saga_type)
        command = StartSaga(
            envelope=self._envelope(
                sid, saga_type, saga_version, derive_message_id(sid, "start", digest)
            ),
            data=payload,
            input_sha256=digest,
            requested_by=requested_by or self.client_id,
            deadline_at=deadline_at,
        )
        self._send(command, sid, flush=flush)
        return SagaHandle(self, sid, saga_type)

    def confirm_start(
        self, handle: SagaHandle, data: BaseModel | Payload, timeout: float = 30.0
    ) -> SagaState:
        """Wait for the saga's first snapshot and check it was started with ``data``."""
        payload = data if isinstance(data, Payload) else to_payload(data)
        digest = payload_sha256(payload)
        state = self._follow(handle.saga_id, timeout, lambda s: True)
        if state.input_sha256 != digest:
            raise SagaAlreadyStarted(handle.saga_id, state.input_sha256, digest)
        return state

    def signal(
        self,
        saga_id: str,
        name: str | Node,
        *,
        by: str,
        payload: BaseModel | None = None,
        note: str | None = None,
        approved: bool | None = None,
        saga_type: str = "",
    ) -> None:
        """Deliver signal ``name`` to a waiting saga (``by`` names who sent it)."""
        command = SignalSaga(
            envelope=self._envelope(saga_id, saga_type, 1, str(uuid.uuid4())),
            name=_wait_name(name),
            by=by,
            approved=approved,
            note=note,
            payload=to_payload(payload) if payload is not None else None,
        )
        self._send(command, saga_id)

    def approve(self, saga_id: str, wait: str | Node, *, by: str, note: str | None = None) -> None:
        """Approve the saga's open approval ``wait``."""
        self.signal(saga_id, wait, by=by, note=note, approved=True)

    def reject(self, saga_id: str, wait: str | Node, *, by: str, note: str | None = None) -> None:
        """Reject the saga's open approval ``wait`` (the saga compensates by default)."""
        self.signal(saga_id, wait, by=by, note=note, approved=False)

    def cancel(self, saga_id: str, *, by: str, reason: str | None = None) -> None:
        """Cancel: completed compensable steps are compensated in reverse order."""
        env = self._envelope(saga_id, "", 1, str(uuid.uuid4()))
        self._send(CancelSaga(envelope=env, by=by, reason=reason), saga_id)

    def pause(self, saga_id: str, *, by: str, reason: str | None = None) -> None:
        """Operator: dispatch no new work until resumed."""
        env = self._envelope(saga_id, "", 1, str(uuid.uuid4()))
        self._send(PauseSaga(envelope=env, by=by, reason=reason), saga_id)

    def resume(self, saga_id: str, *, by: str, reason: str | None = None) -> None:
        """Operator: resume a paused saga."""
        env = self._envelope(saga_id, "", 1, str(uuid.uuid4()))
        self._send(ResumeSaga(envelope=env, by=by, reason=reason), saga_id)

    def retry_step(self, saga_id: str, step: str, *, by: str, reason: str | None = None) -> None:
        """Operator: run a failed step again (same idempotency key, next attempt)."""
        env = self._envelope(saga_id, "", 1, str(uuid.uuid4()))
        self._send(RetryStep(envelope=env, step=step, by=by, reason=reason), saga_id)

    def skip_step(
        self,
        saga_id: str,
        step: str,
        *,
        by: str,
        reason: str | None = None,
        result: BaseModel | None = None,
    ) -> None:
        """Operator: treat ``step`` as done without running it."""
        env = self._envelope(saga_id, "", 1, str(uuid.uuid4()))
        self._send(
            SkipStep(
                envelope=env,
                step=step,
                by=by,
                reason=reason,
                result=to_payload(result) if result is not None else None,
            ),
            saga_id,
        )

    # -- reading state -----------------------------------------------------------

    def partition_of(self, saga_id: str) -> int:
        """The partition of the saga's commands, replies and state."""
        if self._partitions is None:
            self._partitions = partition_count(
                self.settings.kafka_bootstrap_servers, self.names.state
            )
        return partition_for(saga_id, self._partitions)

    @contextmanager
    def _reader(self, saga_id: str) -> Iterator[tuple[Consumer, TopicPartition, int]]:
        reader = Consumer(
            reader_config(
                self.settings.kafka_bootstrap_servers, f"{self.client_id}-read-{uuid.uuid4().hex}"
            )
        )
        try:
            tp = TopicPartition(self.names.state, self.partition_of(saga_id))
            low, high = watermarks(reader, tp, time.monotonic() + 30)
            reader.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)])
            # nothing to read when the partition is empty (or compacted away)
            yield reader, tp, high if high > low else 0
        finally:
            reader.close()

    def _decode(self, value: bytes) -> SagaState:
        state = self.codec.decode(value, (SagaState,))
        assert isinstance(state, SagaState)
        return state

    def status(self, saga_id: str, timeout: float = 30.0) -> SagaState | None:
        """The saga's latest committed snapshot, or ``None`` if it has none."""
        key = saga_id.encode("utf-8")
        latest: bytes | None = None
        with self._reader(saga_id) as (reader, tp, high):
            if high <= 0:
                return None
            deadline = time.monotonic() + timeout
            while True:
                for msg in reader.consume(1000, 0.1):
                    err = msg.error()
                    if err is not None:
                        _check(err)
                        continue
                    if msg.key() == key:
                        latest = msg.value()
                if reader.position([tp])[0].offset >= high:
                    break
                if time.monotonic() > deadline:
                    raise WaitTimeout(f"reading the state of {saga_id!r} took over {timeout}s")
        return self._decode(latest) if latest is not None else None

    def wait(self, saga_id: str, timeout: float = 60.0) -> SagaState:
        """Block until the saga is terminal and return its final snapshot."""
        return self._follow(saga_id, timeout, lambda s: s.is_terminal)

    def _follow(self, saga_id: str, timeout: float, done: Any) -> SagaState:
        key = saga_id.encode("utf-8")
        latest: SagaState | None = None
        deadline = time.monotonic() + timeout
        with self._reader(saga_id) as (reader, _tp, _high):
            while time.monotonic() < deadline:
                for msg in reader.consume(1000, 0.05):
                    err = msg.error()
                    if err is not None:
                        _check(err)
                        continue
                    if msg.key() == key:
                        value = msg.value()
                        latest = self._decode(value) if value is not None else None
                if latest is not None and done(latest):
                    return latest
        raise WaitTimeout(
            f"saga {saga_id!r} not done within {timeout}s "
            f"(last status: {latest.status if latest else 'no snapshot'})"
        )
