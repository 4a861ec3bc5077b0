"""``SagaClient``: start sagas, signal and steer them, read their status, wait for them.

Every call writes one Avro command record to the commands topic, keyed by
the saga id (so one saga's commands stay in order and land in the
partition of its state).  Any producer that writes the same Avro record to
the same partition can do the same; nothing here is privileged.

Every write is confirmed by Kafka before the call returns, or raises:
:class:`KafkaUnavailable` when the broker did not answer within 10 s (nothing
was sent), :class:`DeliveryFailed` when it did not confirm the write (see
:mod:`sagaline.orchestrator.client.delivery`).  Commands return a
:class:`Receipt`; :meth:`SagaClient.verdict` waits for what the orchestrator
did with it (accepted, ignored, unknown saga, dead-lettered).

Status and results are read from the compacted state topic (exact, no extra
store; the cost is a scan of one compacted partition, so hot dashboards
should read a projection).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import SpanKind, Tracer
from pydantic import BaseModel

from sagaline.orchestrator.client.delivery import (
    KAFKA_TIMEOUT_S,
    CommandProducer,
    Receipt,
)
from sagaline.orchestrator.client.errors import (
    SagaAlreadyStarted,
    UnsupportedDataModel,
)
from sagaline.orchestrator.client.reading import StateReader
from sagaline.orchestrator.client.stream import (
    MODES,
    ClientParts,
    StreamEvent,
    StreamMode,
    check_modes,
    stream_saga,
)
from sagaline.orchestrator.client.verdicts import Verdict, await_verdict
from sagaline.orchestrator.client.watch import SnapshotWatch
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.core.decider import derive_message_id
from sagaline.orchestrator.core.saga import Node, Saga
from sagaline.orchestrator.runtime.core import AvroCodec
from sagaline.orchestrator.runtime.data_keys import encode_payload
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.ports import Codec
from sagaline.orchestrator.runtime.telemetry import (
    carrier_from_context,
    get_tracer,
    headers_from_carrier,
)
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
from sagaline.schemas.payload import payload_sha256, payload_type_name
from sagaline.schemas.state import SagaState

__all__ = ["SagaClient", "SagaHandle", "check_data_model"]


@dataclass(frozen=True)
class SagaHandle:
    """A started saga: its id and shortcuts to the client's calls.

    ``receipt`` is where Kafka stored the start (``None`` for a start that was
    already recorded, or one sent with ``flush=False``).
    """

    client: SagaClient
    saga_id: str
    saga_type: str
    receipt: Receipt | None = None
    sent_ms: int | None = None

    def status(self) -> SagaState | None:
        """The latest snapshot (``None`` until the orchestrator has decided the start)."""
        return self.client.status(self.saga_id)

    def wait(self, timeout: float = 60.0) -> SagaState:
        """Block until the saga is terminal; return its final snapshot.

        Raises :class:`SagaRejected` (with the dead letter's reason) when the
        orchestrator refused the start, :class:`WaitTimeout` after ``timeout``.
        """
        since = self.receipt.timestamp_ms if self.receipt else self.sent_ms
        return self.client.wait(self.saga_id, timeout=timeout, since_ms=since)

    def stream(
        self, timeout: float | None = None, *, modes: Collection[StreamMode] = MODES
    ) -> Iterator[StreamEvent]:
        """Yield the saga's state changes and its steps' progress live, ending with its
        terminal snapshot (see :meth:`SagaClient.stream`)."""
        since = self.receipt.timestamp_ms if self.receipt else self.sent_ms
        return self.client.stream(self.saga_id, timeout=timeout, since_ms=since, modes=modes)


def _wait_name(wait: str | Node) -> str:
    return wait.name if isinstance(wait, Node) else wait


def check_data_model(saga: type[Saga[Any]] | str, data: BaseModel) -> None:
    """Refuse data the orchestrator cannot decode, before anything is sent."""
    model = type(data)
    if model.__module__ == "__main__":
        raise UnsupportedDataModel(
            f"the data model {model.__name__} is defined in __main__ (the script being run), "
            f"so the orchestrator and the worker cannot import it: move {model.__name__} "
            "(and its saga) into a module of your project and import it from there"
        )
    if isinstance(saga, str):
        return
    expected, got = payload_type_name(saga.data_type), payload_type_name(model)
    if expected != got:
        raise UnsupportedDataModel(
            f"saga {saga.type_name!r} takes {expected}, not {got}: "
            f"build the data as {saga.data_type.__name__}(...)"
        )


class SagaClient:
    """Writes commands for sagas and reads their snapshots (owns one idempotent producer).

    ``timeout`` bounds every wait for Kafka (default 10 s); ``debug`` lets
    librdkafka's own log lines through to the ``sagaline.kafka`` logger.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        codec: Codec | None = None,
        client_id: str = "sagaline-client",
        tracer: Tracer | None = None,
        timeout: float = KAFKA_TIMEOUT_S,
        debug: bool = False,
    ) -> None:
        self.settings = settings
        self.names = settings.topics
        self.codec: Codec = codec or AvroCodec()
        self.client_id = client_id
        self.debug = debug
        bootstrap = settings.kafka_bootstrap_servers
        self._commands = CommandProducer(
            bootstrap, self.names.commands, timeout=timeout, debug=debug
        )
        self._reader = StateReader(bootstrap, self.names, self.codec, client_id, debug=debug)
        self._watch: SnapshotWatch | None = None
        self._watch_lock = threading.Lock()
        self._tracer = tracer or get_tracer()

    # -- lifecycle ---------------------------------------------------------------

    def flush(self) -> list[Receipt]:
        """Confirm every command sent with ``flush=False``; raise if any was not confirmed."""
        return self._commands.flush()

    def close(self) -> None:
        """Confirm what is queued (raises :class:`DeliveryFailed` for what was not); stop
        the reader that waits share."""
        try:
            self._commands.close()
        finally:
            with self._watch_lock:
                watch, self._watch = self._watch, None
            if watch is not None:
                watch.close()

    def __enter__(self) -> SagaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing commands --------------------------------------------------------

    def _payload(self, saga_id: str, model: BaseModel, *, create: bool = False) -> Payload:
        """``model`` on the wire; its personal fields encrypted with the saga's data key."""
        return encode_payload(self.settings, saga_id, model, create=create)

    def _envelope(self, saga_id: str, saga_type: str, version: int, message_id: str) -> Envelope:
        return Envelope(
            message_id=message_id,
            saga_id=saga_id,
            saga_type=saga_type,
            saga_version=version,
            occurred_at=datetime.now(UTC),
            correlation_id=saga_id,
        )

    def _send(self, record: Record, saga_id: str, *, flush: bool = True) -> Receipt | None:
        """Produce ``record`` to the commands topic inside a PRODUCER span; confirm it."""
        command = type(record).__name__
        with self._tracer.start_as_current_span(
            f"send {self.names.commands}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": self.names.commands,
                "sagaline.saga_id": saga_id,
                "sagaline.command": command,
            },
        ):
            carrier = carrier_from_context()
            envelope: Envelope = record.envelope  # type: ignore[attr-defined]
            record = record.model_copy(
                update={"envelope": envelope.model_copy(update={"trace": carrier})}
            )
            self._commands.produce(
                key=saga_id.encode("utf-8"),
                value=self.codec.encode(record),
                headers=headers_from_carrier(carrier) or None,
                saga_id=saga_id,
                command=command,
                message_id=envelope.message_id,
            )
            if not flush:
                return None
            receipts = self._commands.flush()
            return next((r for r in receipts if r.message_id == envelope.message_id), None)

    def verdict(self, receipt: Receipt, timeout: float = 30.0) -> Verdict:
        """Wait for the orchestrator's verdict on a sent command (:class:`WaitTimeout`)."""
        return await_verdict(
            self.settings.kafka_bootstrap_servers,
            self.names,
            self.codec,
            receipt,
            timeout,
            debug=self.debug,
        )

    def _sent(self, record: Record, saga_id: str) -> Receipt:
        receipt = self._send(record, saga_id)
        assert receipt is not None  # flush() raised for any unconfirmed command
        return receipt

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
        second as a conflict — :meth:`confirm_start` tells the loser).  Data
        the orchestrator could not decode (a model defined in ``__main__``, or
        not the saga's model) raises :class:`UnsupportedDataModel` before
        anything is sent.
        """
        if isinstance(saga, str):
            saga_type, saga_version = saga, version or 1
        else:
            saga_type, saga_version = saga.type_name, version or saga.version
        if isinstance(data, BaseModel):
            check_data_model(saga, data)
        sid = saga_id or str(uuid.uuid4())
        payload = data if isinstance(data, Payload) else self._payload(sid, data, create=True)
        digest = payload_sha256(payload)
        self._commands.partitions()  # Kafka answers (or nothing is sent), before any read
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
        sent_ms = int(time.time() * 1000)
        receipt = self._send(command, sid, flush=flush)
        return SagaHandle(self, sid, saga_type, receipt, sent_ms)

    def confirm_start(
        self, handle: SagaHandle, data: BaseModel | Payload, timeout: float = 30.0
    ) -> SagaState:
        """Wait for the saga's first snapshot and check it was started with ``data``.

        Raises :class:`SagaRejected` when the orchestrator dead-lettered the
        start, :class:`SagaAlreadyStarted` when another input won the race.
        """
        payload = data if isinstance(data, Payload) else self._payload(handle.saga_id, data)
        digest = payload_sha256(payload)
        since = handle.receipt.timestamp_ms if handle.receipt else handle.sent_ms
        state = self._follow(handle.saga_id, timeout, lambda s: True, since)
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
        seen_sha256: str | None = None,
    ) -> Receipt:
        """Deliver signal ``name`` to a waiting saga (``by`` names who sent it)."""
        command = SignalSaga(
            envelope=self._envelope(saga_id, saga_type, 1, str(uuid.uuid4())),
            name=_wait_name(name),
            by=by,
            approved=approved,
            note=note,
            payload=self._payload(saga_id, payload) if payload is not None else None,
            seen_sha256=seen_sha256,
        )
        return self._sent(command, saga_id)

    def approve(
        self,
        saga_id: str,
        wait: str | Node,
        *,
        by: str,
        note: str | None = None,
        seen_sha256: str | None = None,
    ) -> Receipt:
        """Approve the saga's open approval ``wait``.

        ``seen_sha256``: the SHA-256 of the data the approver was shown (the
        open wait's ``shown_sha256``); a bound approval needs it and is
        refused when the data changed since.
        """
        return self.signal(saga_id, wait, by=by, note=note, approved=True, seen_sha256=seen_sha256)

    def reject(
        self, saga_id: str, wait: str | Node, *, by: str, note: str | None = None
    ) -> Receipt:
        """Reject the saga's open approval ``wait`` (the saga compensates by default)."""
        return self.signal(saga_id, wait, by=by, note=note, approved=False)

    def cancel(self, saga_id: str, *, by: str, reason: str | None = None) -> Receipt:
        """Cancel: completed compensable steps are compensated in reverse order."""
        env = self._envelope(saga_id, "", 1, str(uuid.uuid4()))
        return self._sent(CancelSaga(envelope=env, by=by, reason=reason), saga_id)

    def pause(self, saga_id: str, *, by: str, reason: str | None = None) -> Receipt:
        """Operator: dispatch no new work until resumed."""
        env = self._envelope(saga_id, "", 1, str(uuid.uuid4()))
        return self._sent(PauseSaga(envelope=env, by=by, reason=reason), saga_id)

    def resume(self, saga_id: str, *, by: str, reason: str | None = None) -> Receipt:
        """Operator: resume a paused saga."""
        env = self._envelope(saga_id, "", 1, str(uuid.uuid4()))
        return self._sent(ResumeSaga(envelope=env, by=by, reason=reason), saga_id)

    def retry_step(self, saga_id: str, step: str, *, by: str, reason: str | None = None) -> Receipt:
        """Operator: run a failed step again (same idempotency key, next attempt)."""
        env = self._envelope(saga_id, "", 1, str(uuid.uuid4()))
        return self._sent(RetryStep(envelope=env, step=step, by=by, reason=reason), saga_id)

    def skip_step(
        self,
        saga_id: str,
        step: str,
        *,
        by: str,
        reason: str | None = None,
        result: BaseModel | None = None,
    ) -> Receipt:
        """Operator: treat ``step`` as done without running it."""
        env = self._envelope(saga_id, "", 1, str(uuid.uuid4()))
        record = SkipStep(
            envelope=env,
            step=step,
            by=by,
            reason=reason,
            result=self._payload(saga_id, result) if result is not None else None,
        )
        return self._sent(record, saga_id)

    # -- reading state -----------------------------------------------------------

    def partition_of(self, saga_id: str) -> int:
        """The partition of the saga's commands, replies and state."""
        return partition_for(saga_id, self._commands.partitions("nothing was read"))

    def status(self, saga_id: str, timeout: float = 30.0) -> SagaState | None:
        """The saga's latest committed snapshot, or ``None`` if it has none."""
        return self._reader.latest(saga_id, self.partition_of(saga_id), timeout)

    def wait(
        self, saga_id: str, timeout: float = 60.0, *, since_ms: int | None = None
    ) -> SagaState:
        """Block until the saga is terminal and return its final snapshot.

        A start the orchestrator refused raises :class:`SagaRejected` with the
        dead letter's reason (dead letters are read from ``since_ms``, the
        start's timestamp, when given; else from the beginning).
        """
        return self._follow(saga_id, timeout, lambda s: s.is_terminal, since_ms)

    def stream(
        self,
        saga_id: str,
        *,
        timeout: float | None = None,
        since_ms: int | None = None,
        modes: Collection[StreamMode] = MODES,
    ) -> Iterator[StreamEvent]:
        """Yield :class:`StreamEvent` items live: ``"state"`` (a new snapshot: status,
        current node) and ``"progress"`` (what a step published with ``ctx.progress``),
        interleaved as they happened, ending with the terminal snapshot.

        Progress is advisory (some may be missing).  Raises :class:`SagaRejected` for a
        refused start, :class:`WaitTimeout` after ``timeout`` s (``None``: no limit).
        """
        check_modes(modes)
        parts = ClientParts(
            self.settings.kafka_bootstrap_servers,
            self.names,
            self.codec,
            self.client_id,
            self.debug,
        )
        partition = self.partition_of(saga_id)
        return stream_saga(
            self._shared_watch(),
            parts,
            saga_id,
            partition,
            since_ms=since_ms,
            timeout=timeout,
            modes=modes,
        )

    def _follow(self, saga_id: str, timeout: float, done: Any, since_ms: int | None) -> SagaState:
        """Wait through the client's one shared reader (started by the first wait)."""
        partition = self.partition_of(saga_id)
        return self._shared_watch().wait(saga_id, partition, done, timeout, since_ms)

    def _shared_watch(self) -> SnapshotWatch:
        with self._watch_lock:
            if self._watch is None:
                self._watch = SnapshotWatch(
                    self.settings.kafka_bootstrap_servers,
                    self.names,
                    self.codec,
                    self.client_id,
                    debug=self.debug,
                )
            return self._watch
