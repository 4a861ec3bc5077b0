"""The decision context: what deciding one input may do, and nothing else.

A :class:`DecisionContext` holds the saga's state while one input is
decided.  Node kinds (``sagaline.orchestrator.core.nodes``) act through it:
they :meth:`~DecisionContext.emit` journal events (each is folded into the
state at once, which also sets and clears the saga's timers), :meth:`~DecisionContext.send`
records (tasks, commands, replies), move the saga with
:meth:`~DecisionContext.enter` and end it with :meth:`~DecisionContext.finish`.
Pure: no I/O, no clock (the time is the input's ``occurred_at``).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from sagaline.orchestrator.core import limits
from sagaline.orchestrator.core.fold import evolve
from sagaline.orchestrator.core.nodes import compensation
from sagaline.orchestrator.core.nodes.base import Node, kind_of, parse_task_step
from sagaline.orchestrator.core.payloads import from_payload
from sagaline.orchestrator.core.policies import NO_RETRY, Retry
from sagaline.schemas.base import Envelope, Payload, Record, Usage
from sagaline.schemas.events import (
    FinalStatus,
    IgnoreReason,
    InputIgnored,
    NodeEntered,
    SagaEvent,
    SagaFinished,
    StepAttemptFailed,
    StepDispatched,
    UsageRecorded,
)
from sagaline.schemas.journal import JournalInput
from sagaline.schemas.replies import StepFailed, StepSucceeded
from sagaline.schemas.state import SagaState, StepState
from sagaline.schemas.tasks import ExecuteStep
from sagaline.schemas.trusted import make

if TYPE_CHECKING:
    from sagaline.orchestrator.core.saga import Saga

__all__ = ["Decision", "DecisionContext", "Outgoing", "derive_message_id", "ms"]


@dataclass(frozen=True)
class Outgoing:
    """A record to publish: ``destination`` is ``"tasks"``, ``"commands"``,
    ``"replies"`` or a participant topic name."""

    destination: str
    record: Record


@dataclass(frozen=True)
class Decision:
    """What one input decided: journal ``events``, ``outgoing`` records, the new ``state``.

    ``rejected`` is set (and everything else empty) when the input cannot
    belong to any saga: a reply or command for a saga that does not exist,
    or a start whose data does not validate.  The runtime dead-letters it.
    """

    events: tuple[SagaEvent, ...]
    outgoing: tuple[Outgoing, ...]
    state: SagaState | None
    rejected: str | None = None


_ID_NAMESPACE = uuid.UUID("6f1c9a52-3d1e-4c8b-9a57-5a6167616c69")


_ID_PREFIX = _ID_NAMESPACE.bytes

_NO_USAGE = Usage()


def derive_message_id(*parts: object) -> str:
    """A deterministic message id (UUIDv5) from ``parts``: ``str(uuid.uuid5(...))``
    written directly (SHA-1, version and variant digits), without the UUID object."""
    name = "/".join(map(str, parts)).encode()
    h = hashlib.sha1(_ID_PREFIX + name, usedforsecurity=False).hexdigest()
    # version 5 in the 13th digit; the RFC 4122 variant (10xx) in the 17th
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


#: the 17th hex digit with its top two bits set to the RFC 4122 variant ``10``
_VARIANT = {f"{d:x}": f"{(d & 0x3) | 0x8:x}" for d in range(16)}


def ms(delta: timedelta | None) -> int | None:
    return None if delta is None else int(delta.total_seconds() * 1000)


class DecisionContext:
    """The state, the events and the outgoing records of one decision."""

    def __init__(
        self, definition: type[Saga[Any]], state: SagaState | None, input: JournalInput
    ) -> None:
        self.defn = definition
        self.state = state
        self.input = input
        self.env = input.envelope
        self.now = input.envelope.occurred_at
        self.events: list[SagaEvent] = []
        self.outgoing: list[Outgoing] = []
        self.saga = definition()

    # -- effects --------------------------------------------------------------

    def emit(self, event: SagaEvent) -> None:
        """Journal ``event`` and fold it into the state."""
        self.state = evolve(self.state, event)
        self.events.append(event)

    def send(self, destination: str, record: Record) -> None:
        """Publish ``record`` to ``destination`` with the decision."""
        self.outgoing.append(Outgoing(destination, record))

    def ignore(self, reason: IgnoreReason, detail: str = "") -> None:
        self.emit(
            make(
                InputIgnored,
                at=self.now,
                input_type=type(self.input).__name__,
                reason=reason,
                detail=detail,
                message_id=self.env.message_id,
            )
        )

    def decision(self, rejected: str | None = None) -> Decision:
        return Decision(
            events=tuple(self.events),
            outgoing=tuple(self.outgoing),
            state=self.state,
            rejected=rejected,
        )

    # -- reading --------------------------------------------------------------

    @property
    def s(self) -> SagaState:
        assert self.state is not None
        return self.state

    @property
    def compensating(self) -> bool:
        """Compensating, or paused while compensating."""
        s = self.s
        return s.status == "compensating" or (
            s.status == "paused" and s.paused_from == "compensating"
        )

    def data(self) -> BaseModel:
        return from_payload(self.s.data, self.defn.data_type)

    def node_of(self, step: str) -> Node | None:
        """The node a task step name belongs to (``"agent.tool#2"`` → the agent)."""
        return self.defn.nodes.get(parse_task_step(step)[0])

    def envelope(
        self, saga_id: str | None = None, saga_type: str | None = None, version: int | None = None
    ) -> Envelope:
        return make(
            Envelope,
            message_id=derive_message_id(self.env.message_id, len(self.outgoing)),
            saga_id=saga_id or self.s.saga_id,
            saga_type=saga_type or self.s.saga_type,
            saga_version=version if version is not None else self.s.saga_version,
            occurred_at=self.now,
            causation_id=self.env.message_id,
            correlation_id=self.env.correlation_id or self.s.saga_id,
            trace=dict(self.env.trace),
        )

    # -- moves ----------------------------------------------------------------

    def enter(self, node: Node | None, *, previous: str | None, via: str) -> None:
        """Move to ``node`` (``None``: past the last node, the saga completes)."""
        self.emit(
            make(
                NodeEntered,
                at=self.now,
                node=node.name if node else None,
                kind=node.kind if node else None,
                previous=previous,
                branches=list(kind_of(node).branches(node)) if node is not None else [],
                via=via,
            )
        )
        if node is None:
            self.finish("completed", None)

    def route_after(self, node: Node) -> None:
        """``node`` is done: enter the node its kind chooses next."""
        target, via = kind_of(node).next_node(self, node)
        self.enter(target, previous=node.name, via=via)

    def apply_action(self, action: str, node: Node, reason: str) -> None:
        """Do a wait's outcome action: continue, compensate, fail, or go to a node."""
        if action == "continue":
            self.enter(self.defn.next_node(node.name), previous=node.name, via=reason)
        elif action == "compensate":
            self.start_compensation(reason)
        elif action == "fail":
            self.finish("failed", reason)
        else:
            self.enter(self.defn.node(action), previous=node.name, via=reason)

    def start_compensation(self, reason: str, final: str = "compensated") -> None:
        compensation.start(self, reason, final)

    # -- tasks ----------------------------------------------------------------

    def dispatch_task(
        self,
        st: StepState,
        *,
        args: Payload,
        destination: str,
        compensable: bool,
        timeout: timedelta | None,
        heartbeat: timedelta | None,
        keep_args: bool = False,
    ) -> None:
        """Send the next attempt of task ``st`` (the dispatch sets its timeout timers)."""
        if limits.hold_back(self, st):
            return  # it waits for a slot of its limit (StepQueued)
        run = max(st.run, 1)
        attempt = st.attempt + 1
        key = f"{self.s.saga_id}/{st.name}/{run}"
        task_id = f"{key}/{attempt}"
        deadline = self.now + timeout if timeout is not None else None
        hb_deadline = self.now + heartbeat if heartbeat is not None else None
        self.emit(
            make(
                StepDispatched,
                at=self.now,
                step=st.name,
                attempt=attempt,
                run=run,
                idempotency_key=key,
                task_id=task_id,
                destination=destination,
                compensable=compensable,
                deadline_at=deadline,
                heartbeat_deadline_at=hb_deadline,
                heartbeat_timeout_ms=ms(heartbeat),
                args=args if keep_args else None,
            )
        )
        self.send(
            destination,
            make(
                ExecuteStep,
                envelope=self.envelope(),
                step=st.name,
                attempt=attempt,
                idempotency_key=key,
                task_id=task_id,
                args=args,
                deadline_at=deadline,
                heartbeat_timeout_ms=ms(heartbeat),
            ),
        )

    def retry_policy(self, step: str) -> Retry:
        node = self.node_of(step)
        return kind_of(node).retry_policy(node, step) if node is not None else NO_RETRY

    def emit_failure(
        self, step: str, attempt: int, retryable: bool, error_type: str, message: str
    ) -> None:
        """Record a failed attempt: a retry timer, or the node's permanent failure."""
        policy = self.retry_policy(step)
        if retryable and policy.allows(attempt) and not self.compensating:
            retry_at = self.now + policy.delay(attempt, self.s.saga_id, step)
            self.emit(
                make(
                    StepAttemptFailed,
                    at=self.now,
                    step=step,
                    attempt=attempt,
                    retryable=True,
                    error_type=error_type,
                    error_message=message,
                    retry_at=retry_at,
                )
            )
            return
        self.emit(
            make(
                StepAttemptFailed,
                at=self.now,
                step=step,
                attempt=attempt,
                retryable=retryable,
                error_type=error_type,
                error_message=message,
                final=True,
            )
        )
        if self.compensating:
            return
        error = f"{error_type}: {message}"
        node = self.node_of(step)
        if node is None:
            self.start_compensation(f"step {step} failed: {error}")
        else:
            kind_of(node).on_permanent_failure(self, node, step, error)

    def record_usage(self, step: str, usage: Usage) -> None:
        if type(usage) is not Usage or usage.__dict__ != _NO_USAGE.__dict__:
            self.emit(make(UsageRecorded, at=self.now, step=step, usage=usage))

    # -- the end --------------------------------------------------------------

    def finish(self, status: FinalStatus, reason: str | None) -> None:
        """End the saga; a child saga replies to its parent's node."""
        limits.release_all(self, f"saga {status}")  # its slots go back before it ends
        self.emit(make(SagaFinished, at=self.now, status=status, reason=reason))
        parent = self.s.parent
        if parent is None:
            return
        env = self.envelope(parent.saga_id, parent.saga_type, parent.saga_version)
        child_id = self.s.saga_id
        if status == "completed":
            reply: Record = StepSucceeded(
                envelope=env,
                step=parent.step,
                attempt=1,
                idempotency_key=child_id,
                task_id=child_id,
                result=self.s.data,
            )
        else:
            reply = StepFailed(
                envelope=env,
                step=parent.step,
                attempt=1,
                idempotency_key=child_id,
                task_id=child_id,
                retryable=False,
                error_type=f"ChildSaga{status.capitalize()}",
                error_message=reason or status,
            )
        self.send("replies", reply)
