"""The decider's shared machinery: emitting events, messages, moves, dispatch, compensation.

Used by :mod:`sagaline.orchestrator.core.decider` (the input handlers) and
:mod:`sagaline.orchestrator.core.decider_agents` (agent loops).  Pure: no I/O, no clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from sagaline.orchestrator.core.errors import RoutingError
from sagaline.orchestrator.core.fold import evolve
from sagaline.orchestrator.core.payloads import (
    from_payload,
    input_sha256,
    to_payload,
)
from sagaline.orchestrator.core.policies import NO_RETRY, Retry
from sagaline.orchestrator.core.saga import (
    DONE,
    AgentSpec,
    ChildSpec,
    Node,
    ParallelSpec,
    Saga,
    StepSpec,
    WaitSpec,
    parse_task_step,
)
from sagaline.schemas.base import Envelope, Payload, Record, Usage
from sagaline.schemas.commands import (
    CancelSaga,
    ParentRef,
    StartSaga,
)
from sagaline.schemas.events import (
    AgentGaveUp,
    AgentObservation,
    ChildSagaRequested,
    CompensationAttemptFailed,
    CompensationDispatched,
    CompensationStarted,
    FinalStatus,
    IgnoreReason,
    InputIgnored,
    NodeEntered,
    SagaEvent,
    SagaFinished,
    SagaPaused,
    StepAttemptFailed,
    StepCompensated,
    StepDispatched,
    UsageRecorded,
)
from sagaline.schemas.journal import JOURNAL_INPUT_TYPES, JournalInput
from sagaline.schemas.replies import (
    CompensationFailed,
    CompensationSucceeded,
    StepFailed,
    StepSucceeded,
)
from sagaline.schemas.state import SagaState, StepState
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = [
    "INPUT_TYPES",
    "DeciderBase",
    "Decision",
    "Input",
    "Outgoing",
    "derive_message_id",
    "failure_pause_reason",
]

#: Every input the decider accepts: exactly the inputs a journal entry records.
Input = JournalInput
INPUT_TYPES: tuple[type[Record], ...] = tuple(JOURNAL_INPUT_TYPES.values())

_MAX_MOVES = 1000


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


def derive_message_id(*parts: object) -> str:
    """A deterministic message id (UUIDv5) from ``parts``."""
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(str(p) for p in parts)))


def _ms(delta: timedelta | None) -> int | None:
    return None if delta is None else int(delta.total_seconds() * 1000)


def failure_pause_reason(step: str) -> str:
    """The pause reason of a step that failed permanently with ``on_failure="pause"``."""
    return f"step {step} failed permanently; retry or skip it"


class DeciderBase:
    """State, plumbing and the moves shared by every kind of input (pure)."""

    def __init__(self, definition: type[Saga[Any]], state: SagaState | None, input: Input) -> None:
        self.defn = definition
        self.state = state
        self.input = input
        self.env = input.envelope
        self.now = input.envelope.occurred_at
        self.events: list[SagaEvent] = []
        self.outgoing: list[Outgoing] = []
        self.saga = definition()

    # -- plumbing -------------------------------------------------------------

    def emit(self, event: SagaEvent) -> None:
        self.state = evolve(self.state, event)
        self.events.append(event)

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

    def envelope(
        self, saga_id: str | None = None, saga_type: str | None = None, version: int | None = None
    ) -> Envelope:
        return Envelope(
            message_id=derive_message_id(self.env.message_id, len(self.outgoing)),
            saga_id=saga_id or self.s.saga_id,
            saga_type=saga_type or self.s.saga_type,
            saga_version=version if version is not None else self.s.saga_version,
            occurred_at=self.now,
            causation_id=self.env.message_id,
            correlation_id=self.env.correlation_id or self.s.saga_id,
            trace=dict(self.env.trace),
        )

    def send(self, destination: str, record: Record) -> None:
        self.outgoing.append(Outgoing(destination, record))

    def ignore(self, reason: IgnoreReason, detail: str = "") -> None:
        self.emit(
            InputIgnored(
                at=self.now,
                input_type=type(self.input).__name__,
                reason=reason,
                detail=detail,
                message_id=self.env.message_id,
            )
        )

    def data(self) -> BaseModel:
        return from_payload(self.s.data, self.defn.data_type)

    # -- entry ----------------------------------------------------------------
    # -- moving through the definition ----------------------------------------

    def enter(self, node: Node | None, *, previous: str | None, via: str) -> None:
        branches = [b.name for b in node.branches] if isinstance(node, ParallelSpec) else []
        self.emit(
            NodeEntered(
                at=self.now,
                node=node.name if node else None,
                kind=node.kind if node else None,
                previous=previous,
                branches=branches,
                via=via,
            )
        )
        if node is None:
            self.finish("completed", None)

    def route_after(self, node: Node) -> None:
        target: Node | None = self.defn.next_node(node.name)
        via = "sequence"
        if isinstance(node, StepSpec) and node.route_fn is not None:
            chosen = node.route_fn(self.saga, self.data())
            if chosen is not None:
                name = chosen.name if isinstance(chosen, Node) else str(chosen)
                if name not in node.route_targets:
                    raise RoutingError(
                        f"{self.defn.type_name}.{node.name}: route returned {name!r}, "
                        f"declared {node.route_targets!r}"
                    )
                target = None if name == DONE else self.defn.node(name)
                via = f"route:{name}"
        self.enter(target, previous=node.name, via=via)

    def apply_action(self, action: str, node: WaitSpec, reason: str) -> None:
        if action == "continue":
            self.enter(self.defn.next_node(node.name), previous=node.name, via=reason)
        elif action == "compensate":
            self.start_compensation(reason)
        elif action == "fail":
            self.finish("failed", reason)
        else:
            self.enter(self.defn.node(action), previous=node.name, via=reason)

    # -- steps ----------------------------------------------------------------

    def dispatch_step(self, spec: StepSpec, st: StepState) -> None:
        self.dispatch_task(
            st,
            args=self.s.data,
            destination=spec.to or "tasks",
            compensable=spec.compensable,
            timeout=spec.timeout,
            heartbeat=spec.heartbeat_timeout,
        )

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
        run = max(st.run, 1)
        attempt = st.attempt + 1
        key = f"{self.s.saga_id}/{st.name}/{run}"
        task_id = f"{key}/{attempt}"
        deadline = self.now + timeout if timeout is not None else None
        hb_deadline = self.now + heartbeat if heartbeat is not None else None
        self.emit(
            StepDispatched(
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
                heartbeat_timeout_ms=_ms(heartbeat),
                args=args if keep_args else None,
            )
        )
        self.send(
            destination,
            ExecuteStep(
                envelope=self.envelope(),
                step=st.name,
                attempt=attempt,
                idempotency_key=key,
                task_id=task_id,
                args=args,
                deadline_at=deadline,
                heartbeat_timeout_ms=_ms(heartbeat),
            ),
        )

    def dispatch_child(self, spec: ChildSpec, st: StepState) -> None:
        run = max(st.run, 1)
        child_id = f"{self.s.saga_id}/{spec.name}/{run}"
        data = self.data()
        child_data = spec.input_fn(self.saga, data) if spec.input_fn is not None else data
        payload = to_payload(child_data)
        deadline = self.now + spec.timeout if spec.timeout is not None else None
        definition = spec.definition
        self.emit(
            ChildSagaRequested(
                at=self.now,
                step=spec.name,
                child_saga_id=child_id,
                child_type=definition.type_name,
                child_version=definition.version,
            )
        )
        self.emit(
            StepDispatched(
                at=self.now,
                step=spec.name,
                attempt=st.attempt + 1,
                run=run,
                idempotency_key=child_id,
                task_id=child_id,
                destination="commands",
                deadline_at=deadline,
            )
        )
        self.send(
            "commands",
            StartSaga(
                envelope=self.envelope(child_id, definition.type_name, definition.version),
                data=payload,
                input_sha256=input_sha256(payload),
                requested_by=f"saga:{self.s.saga_id}",
                parent=ParentRef(
                    saga_id=self.s.saga_id,
                    saga_type=self.s.saga_type,
                    saga_version=self.s.saga_version,
                    step=spec.name,
                ),
            ),
        )

    def retry_policy(self, step: str) -> Retry:
        node_name, tool_name, turn = parse_task_step(step)
        node = self.defn.nodes.get(node_name)
        if isinstance(node, AgentSpec) and turn is not None:
            if tool_name is None:
                return node.retry
            found = node.tools.get(tool_name)
            return found.retry if found is not None else NO_RETRY
        if isinstance(node, StepSpec):
            return node.retry
        return NO_RETRY

    def compensation_policy(self, step: str) -> Retry:
        node = self.defn.nodes.get(parse_task_step(step)[0])
        if isinstance(node, StepSpec) and node.compensation_retry is not None:
            return node.compensation_retry
        return self.defn.compensation_retry

    def fold_result(self, node: Node | None, result: Payload | None) -> BaseModel:
        data = self.data()
        if isinstance(node, StepSpec):
            if node.on_result_fn is None or result is None:
                return data
            value = from_payload(result, node.result_type) if node.result_type else None
            out: BaseModel = node.on_result_fn(self.saga, data, value)
            return out
        if isinstance(node, ChildSpec) and node.on_result_fn is not None and result is not None:
            child_data = from_payload(result, node.definition.data_type)
            folded: BaseModel = node.on_result_fn(self.saga, data, child_data)
            return folded
        return data

    def emit_failure(
        self, step: str, attempt: int, retryable: bool, error_type: str, message: str
    ) -> None:
        policy = self.retry_policy(step)
        if retryable and policy.allows(attempt) and not self.compensating:
            retry_at = self.now + policy.delay(attempt, self.s.saga_id, step)
            self.emit(
                StepAttemptFailed(
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
            StepAttemptFailed(
                at=self.now,
                step=step,
                attempt=attempt,
                retryable=retryable,
                error_type=error_type,
                error_message=message,
                final=True,
            )
        )
        if not self.compensating:
            self.on_permanent_failure(step, f"{error_type}: {message}")

    def on_permanent_failure(self, step: str, error: str) -> None:
        node_name, tool_name, turn = parse_task_step(step)
        node = self.defn.nodes.get(node_name)
        reason = f"step {step} failed: {error}"
        if isinstance(node, AgentSpec) and turn is not None:
            if tool_name is not None:
                self.emit(
                    AgentObservation(
                        at=self.now,
                        agent=node.name,
                        turn=turn,
                        tool=tool_name,
                        ok=False,
                        content=error,
                    )
                )
                return
            self.emit(AgentGaveUp(at=self.now, agent=node.name, turn=turn, reason=reason))
            self.start_compensation(reason)
            return
        if isinstance(node, StepSpec) and node.on_failure == "pause":
            self.emit(SagaPaused(at=self.now, by="sagaline", reason=failure_pause_reason(step)))
            return
        if isinstance(node, StepSpec) and node.on_failure == "fail":
            self.finish("failed", reason)
            return
        self.start_compensation(reason)

    def record_usage(self, step: str, usage: Usage) -> None:
        if usage != Usage():
            self.emit(UsageRecorded(at=self.now, step=step, usage=usage))

    # -- compensation ---------------------------------------------------------

    def start_compensation(self, reason: str, final: str = "compensated") -> None:
        s = self.s
        plan = [
            n
            for n in reversed(s.completed_compensable)
            if s.steps[n].compensation_status != "compensated"
        ]
        self.emit(
            CompensationStarted(
                at=self.now,
                reason=reason,
                steps=plan,
                final_status="cancelled" if final == "cancelled" else "compensated",
            )
        )
        for name, st in self.s.steps.items():
            node = self.defn.nodes.get(name)
            if isinstance(node, ChildSpec) and st.status == "running" and st.task_id:
                self.send(
                    "commands",
                    CancelSaga(
                        envelope=self.envelope(
                            st.task_id, node.definition.type_name, node.definition.version
                        ),
                        by=f"saga:{s.saga_id}",
                        reason=reason,
                    ),
                )

    def drive_compensation(self) -> None:
        s = self.s
        if any(st.status == "running" for st in s.steps.values()):
            return
        for name in s.compensation_plan:
            st = s.steps[name]
            status = st.compensation_status
            if status == "compensated":
                continue
            if status in ("ready", "none"):
                self.dispatch_compensation(st)
            return
        self.finish(s.final_status or "compensated", s.compensation_reason)

    def dispatch_compensation(self, st: StepState) -> None:
        attempt = st.compensation_attempt + 1
        key = f"{self.s.saga_id}/{st.name}/{max(st.run, 1)}/compensate"
        task_id = f"{key}/{attempt}"
        node = self.defn.nodes.get(parse_task_step(st.name)[0])
        timeout = node.timeout if isinstance(node, StepSpec) else None
        deadline = self.now + timeout if timeout is not None else None
        self.emit(
            CompensationDispatched(
                at=self.now,
                step=st.name,
                attempt=attempt,
                idempotency_key=key,
                task_id=task_id,
                destination=st.destination,
                deadline_at=deadline,
            )
        )
        self.send(
            st.destination,
            CompensateStep(
                envelope=self.envelope(),
                step=st.name,
                attempt=attempt,
                idempotency_key=key,
                task_id=task_id,
                args=st.args if st.args is not None else self.s.data,
                step_result=st.result,
                deadline_at=deadline,
            ),
        )

    def on_compensation_succeeded(self, r: CompensationSucceeded) -> None:
        st = self.s.steps.get(r.step)
        if (
            st is None
            or st.compensation_idempotency_key != r.idempotency_key
            or st.compensation_status not in ("running", "retry_wait", "ready")
        ):
            reason: IgnoreReason = "duplicate"
            if st is None:
                reason = "unknown_step"
            elif st.compensation_status != "compensated":
                reason = "stale"
            self.ignore(reason, f"compensation of {r.step} attempt {r.attempt}")
            return
        self.emit(StepCompensated(at=self.now, step=r.step, attempt=r.attempt))

    def on_compensation_failed(self, r: CompensationFailed) -> None:
        st = self.s.steps.get(r.step)
        if (
            st is None
            or st.compensation_task_id != r.task_id
            or st.compensation_status != "running"
        ):
            self.ignore("stale", f"compensation of {r.step} attempt {r.attempt}")
            return
        policy = self.compensation_policy(r.step)
        if r.retryable and policy.allows(r.attempt):
            retry_at = self.now + policy.delay(r.attempt, self.s.saga_id, r.step, "compensate")
            self.emit(
                CompensationAttemptFailed(
                    at=self.now,
                    step=r.step,
                    attempt=r.attempt,
                    retryable=True,
                    error_type=r.error_type,
                    error_message=r.error_message,
                    retry_at=retry_at,
                )
            )
            return
        self.emit(
            CompensationAttemptFailed(
                at=self.now,
                step=r.step,
                attempt=r.attempt,
                retryable=r.retryable,
                error_type=r.error_type,
                error_message=r.error_message,
                final=True,
            )
        )
        self.finish("failed", f"compensation of {r.step} failed: {r.error_type}: {r.error_message}")

    # -- the end --------------------------------------------------------------

    def finish(self, status: FinalStatus, reason: str | None) -> None:
        self.emit(SagaFinished(at=self.now, status=status, reason=reason))
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
