"""The pure decider: ``decide(definition, state, input) -> Decision``.

No I/O, no clock, no randomness: the time is the input's
``envelope.occurred_at``, outgoing message ids derive from the input's
message id, retry jitter from the saga id, step and attempt.  Every event
is applied with :func:`orchestrator.fold.evolve` as it is decided, so
``Decision.state`` always equals the fold of the events.

Task step names: a step's own name; ``"<agent>#<turn>"`` for an agent's LLM
turn; ``"<agent>.<tool>#<turn>"`` for a tool call decided in that turn (see
:func:`orchestrator.saga.parse_task_step`).  Task ``args`` are the saga data
for steps and compensations, an :class:`~orchestrator.agents.AgentTurn` for
LLM turns and the validated tool arguments for tool calls.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.agents import AgentDecision, AgentTurn, HistoryItem
from orchestrator.errors import RoutingError
from orchestrator.fold import evolve
from orchestrator.payloads import (
    PayloadDecodeError,
    from_payload,
    input_sha256,
    to_payload,
)
from orchestrator.policies import NO_RETRY, Retry
from orchestrator.saga import (
    DONE,
    AgentSpec,
    ChildSpec,
    Node,
    ParallelSpec,
    Saga,
    SignalInfo,
    SleepSpec,
    StepSpec,
    WaitSpec,
    parse_task_step,
)
from schemas.base import Envelope, Payload, Record, Usage
from schemas.commands import (
    CancelSaga,
    ParentRef,
    PauseSaga,
    ResumeSaga,
    RetryStep,
    SignalSaga,
    SkipStep,
    StartSaga,
)
from schemas.events import (
    AgentAnswered,
    AgentGaveUp,
    AgentObservation,
    AgentTurnRecorded,
    AgentTurnStarted,
    BudgetExceeded,
    ChildSagaRequested,
    CompensationAttemptFailed,
    CompensationDispatched,
    CompensationRetryDue,
    CompensationStarted,
    FinalStatus,
    HeartbeatRecorded,
    IgnoreReason,
    InputIgnored,
    NodeEntered,
    SagaEvent,
    SagaFinished,
    SagaPaused,
    SagaResumed,
    SagaStarted,
    SignalAccepted,
    SignalRejected,
    SleepEnded,
    SleepStarted,
    StepAttemptFailed,
    StepCompensated,
    StepCompleted,
    StepDispatched,
    StepRetryDue,
    StepRetryRequested,
    StepSkipped,
    StepTimedOut,
    ToolCallRequested,
    UsageRecorded,
    WaitOpened,
    WaitTimedOut,
)
from schemas.replies import (
    CompensationFailed,
    CompensationSucceeded,
    StepFailed,
    StepHeartbeat,
    StepSucceeded,
)
from schemas.state import SagaState, StepState, Timer, WaitState
from schemas.tasks import CompensateStep, ExecuteStep
from schemas.timers import TimerFired

__all__ = [
    "INPUT_TYPES",
    "Decision",
    "Input",
    "Outgoing",
    "decide",
    "derive_message_id",
    "pending_timers",
    "timer_input",
]

Input = (
    StartSaga
    | SignalSaga
    | CancelSaga
    | PauseSaga
    | ResumeSaga
    | RetryStep
    | SkipStep
    | StepSucceeded
    | StepFailed
    | StepHeartbeat
    | CompensationSucceeded
    | CompensationFailed
    | TimerFired
)
INPUT_TYPES: tuple[type[Record], ...] = (
    StartSaga,
    SignalSaga,
    CancelSaga,
    PauseSaga,
    ResumeSaga,
    RetryStep,
    SkipStep,
    StepSucceeded,
    StepFailed,
    StepHeartbeat,
    CompensationSucceeded,
    CompensationFailed,
    TimerFired,
)

_ID_NAMESPACE = uuid.UUID("6f1c9a52-3d1e-4c8b-9a57-5a6167616c69")
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


def derive_message_id(*parts: object) -> str:
    """A deterministic message id (UUIDv5) from ``parts``."""
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(str(p) for p in parts)))


def decide(definition: type[Saga[Any]], state: SagaState | None, input: Input) -> Decision:
    """Decide ``input`` against ``state`` under ``definition`` (pure)."""
    decider = _Decider(definition, state, input)
    rejected = decider.run()
    return Decision(
        events=tuple(decider.events),
        outgoing=tuple(decider.outgoing),
        state=decider.state,
        rejected=rejected,
    )


def pending_timers(state: SagaState | None) -> list[Timer]:
    """The timers of ``state`` in due order (empty for no state or a finished saga)."""
    if state is None or state.is_terminal:
        return []
    return sorted(state.timers, key=lambda t: (t.due_at, t.timer_id))


def timer_input(state: SagaState, timer: Timer, now: datetime) -> TimerFired:
    """The ``TimerFired`` input for a due ``timer`` (its id is stable across re-firings)."""
    return TimerFired(
        envelope=Envelope(
            message_id=derive_message_id(
                state.saga_id, "timer", timer.timer_id, timer.due_at.isoformat()
            ),
            saga_id=state.saga_id,
            saga_type=state.saga_type,
            saga_version=state.saga_version,
            occurred_at=max(now, timer.due_at),
            correlation_id=state.saga_id,
        ),
        timer_id=timer.timer_id,
        kind=timer.kind,
        due_at=timer.due_at,
        step=timer.step,
        attempt=timer.attempt,
    )


def _ms(delta: timedelta | None) -> int | None:
    return None if delta is None else int(delta.total_seconds() * 1000)


class _Decider:
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

    def run(self) -> str | None:
        inp = self.input
        if self.state is None:
            if isinstance(inp, StartSaga):
                return self.start(inp)
            return f"no saga {self.env.saga_id!r} for {type(inp).__name__}"
        if isinstance(inp, StartSaga):
            same = inp.input_sha256 == self.s.input_sha256
            self.ignore("duplicate" if same else "conflict", "saga already started")
            return None
        if self.s.is_terminal:
            if isinstance(inp, SignalSaga):
                self.reject_signal(inp, f"saga is {self.s.status}")
            else:
                self.ignore("terminal", f"saga is {self.s.status}")
            return None
        handler = _HANDLERS[type(inp)]
        handler(self, inp)
        self.check_budget()
        self.advance()
        return None

    def start(self, cmd: StartSaga) -> str | None:
        try:
            from_payload(cmd.data, self.defn.data_type)
        except PayloadDecodeError as exc:
            return str(exc)
        deadline = cmd.deadline_at
        if deadline is None and self.defn.deadline is not None:
            deadline = self.now + self.defn.deadline
        self.emit(
            SagaStarted(
                at=self.now,
                saga_id=self.env.saga_id,
                saga_type=self.defn.type_name,
                saga_version=self.defn.version,
                data=cmd.data,
                input_sha256=cmd.input_sha256,
                requested_by=cmd.requested_by,
                deadline_at=deadline,
                parent=cmd.parent,
            )
        )
        self.enter(self.defn.next_node(None), previous=None, via="start")
        self.advance()
        return None

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

    def advance(self) -> None:
        for _ in range(_MAX_MOVES):
            state = self.state
            if state is None or state.is_terminal or state.status == "paused":
                return
            if state.status == "compensating":
                self.drive_compensation()
                return
            if state.node is None:
                return
            moved = self.drive(self.defn.node(state.node))
            if not moved and self.s.status == state.status:
                return
        raise RoutingError(f"{self.defn.type_name}: more than {_MAX_MOVES} moves in one decision")

    def drive(self, node: Node) -> bool:
        """Make the current node progress; True when the saga moved to another node."""
        s = self.s
        if isinstance(node, StepSpec | ChildSpec):
            st = s.steps[node.name]
            if st.status in ("pending", "ready"):
                if isinstance(node, ChildSpec):
                    self.dispatch_child(node, st)
                else:
                    self.dispatch_step(node, st)
                return False
            if st.status in ("succeeded", "skipped"):
                self.route_after(node)
                return True
            return False
        if isinstance(node, ParallelSpec):
            for b in node.branches:
                st = s.steps[b.name]
                if st.status in ("pending", "ready"):
                    self.dispatch_step(b, st)
            if all(s.steps[b.name].status in ("succeeded", "skipped") for b in node.branches):
                self.route_after(node)
                return True
            return False
        if isinstance(node, WaitSpec):
            if any(w.name == node.name for w in s.waits):
                return False
            if node.when_fn is not None and not node.when_fn(self.saga, self.data()):
                self.enter(self.defn.next_node(node.name), previous=node.name, via="not needed")
                return True
            assert node.timeout is not None
            self.emit(
                WaitOpened(
                    at=self.now,
                    name=node.name,
                    kind=node.signal_kind,
                    timeout_at=self.now + node.timeout,
                )
            )
            return False
        if isinstance(node, SleepSpec):
            if s.sleeping_until is None:
                until = self.now + node.duration_for(self.saga, self.data())
                self.emit(SleepStarted(at=self.now, name=node.name, until=until))
            return False
        if isinstance(node, AgentSpec):
            return self.drive_agent(node)
        raise RoutingError(f"cannot run node {node!r}")  # pragma: no cover

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

    def on_step_succeeded(self, r: StepSucceeded) -> None:
        st = self.s.steps.get(r.step)
        verdict = _classify_success(st, r.task_id, r.idempotency_key)
        if verdict is not None:
            self.ignore(verdict, f"{r.step} attempt {r.attempt}")
            return
        assert st is not None
        self.record_usage(r.step, r.usage)
        node_name, tool_name, turn = parse_task_step(r.step)
        node = self.defn.nodes.get(node_name)
        if isinstance(node, AgentSpec) and turn is not None:
            self.emit(
                StepCompleted(
                    at=self.now, step=r.step, attempt=r.attempt, result=r.result, data=self.s.data
                )
            )
            if self.compensating or st.status == "abandoned":
                return
            if tool_name is None:
                self.on_agent_decision(node, turn, r.result)
            else:
                content = r.result.data.decode() if r.result and r.result.data else "ok"
                self.emit(
                    AgentObservation(
                        at=self.now,
                        agent=node.name,
                        turn=turn,
                        tool=tool_name,
                        ok=True,
                        content=content,
                    )
                )
            return
        try:
            new_data = self.fold_result(node, r.result)
        except PayloadDecodeError as exc:
            self.emit_failure(r.step, r.attempt, False, "InvalidResult", str(exc))
            return
        self.emit(
            StepCompleted(
                at=self.now,
                step=r.step,
                attempt=r.attempt,
                result=r.result,
                data=to_payload(new_data),
            )
        )

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

    def on_step_failed(self, r: StepFailed) -> None:
        st = self.s.steps.get(r.step)
        verdict = _classify_failure(st, r.task_id)
        if verdict is not None:
            self.ignore(verdict, f"{r.step} attempt {r.attempt}")
            return
        self.record_usage(r.step, r.usage)
        self.emit_failure(r.step, r.attempt, r.retryable, r.error_type, r.error_message)

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
            self.emit(SagaPaused(at=self.now, by="sagaline", reason=_failure_pause(step)))
            return
        if isinstance(node, StepSpec) and node.on_failure == "fail":
            self.finish("failed", reason)
            return
        self.start_compensation(reason)

    def on_heartbeat(self, r: StepHeartbeat) -> None:
        st = self.s.steps.get(r.step)
        if st is None or st.task_id != r.task_id or st.status != "running":
            self.ignore("stale", f"heartbeat of {r.step} attempt {r.attempt}")
            return
        deadline = None
        if st.heartbeat_timeout_ms is not None:
            deadline = self.now + timedelta(milliseconds=st.heartbeat_timeout_ms)
        self.emit(
            HeartbeatRecorded(
                at=self.now,
                step=r.step,
                attempt=r.attempt,
                progress=r.progress,
                detail=r.detail,
                heartbeat_deadline_at=deadline,
            )
        )

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

    # -- waits, signals, sleeps, timers ---------------------------------------

    def reject_signal(self, sig: SignalSaga, reason: str) -> None:
        self.emit(
            SignalRejected(
                at=self.now,
                name=sig.name,
                by=sig.by,
                reason=reason,
                approved=sig.approved,
                message_id=sig.envelope.message_id,
            )
        )

    def on_signal(self, sig: SignalSaga) -> None:
        wait = _find_wait(self.s.waits, sig.name)
        if wait is None:
            open_names = ", ".join(w.name for w in self.s.waits) or "none"
            self.reject_signal(sig, f"not waiting for {sig.name!r} (open waits: {open_names})")
            return
        if wait.kind in ("approval", "tool_approval") and sig.approved is None:
            self.reject_signal(sig, "an approval needs approved=true or approved=false")
            return
        if wait.kind == "tool_approval":
            self.on_tool_approval(wait, sig)
            return
        node = self.defn.node(wait.name)
        assert isinstance(node, WaitSpec)
        data = self.data()
        if node.on_signal_fn is not None:
            info: BaseModel = SignalInfo(
                name=sig.name, by=sig.by, approved=sig.approved, note=sig.note
            )
            if node.payload_type is not None:
                if sig.payload is None:
                    self.reject_signal(sig, f"signal needs a {node.payload_type.__name__}")
                    return
                try:
                    info = from_payload(sig.payload, node.payload_type)
                except PayloadDecodeError as exc:
                    self.reject_signal(sig, str(exc))
                    return
            data = node.on_signal_fn(self.saga, data, info)
        self.emit(
            SignalAccepted(
                at=self.now,
                name=wait.name,
                by=sig.by,
                approved=sig.approved,
                note=sig.note,
                payload=sig.payload,
                data=to_payload(data),
            )
        )
        if sig.approved is False:
            note = f": {sig.note}" if sig.note else ""
            self.apply_action(node.on_reject, node, f"{wait.name} rejected by {sig.by}{note}")
        else:
            self.apply_action(node.on_approve, node, f"{wait.name} approved by {sig.by}")

    def on_timer(self, t: TimerFired) -> None:
        timer = next((x for x in self.s.timers if x.timer_id == t.timer_id), None)
        if timer is None:
            self.ignore("stale", f"timer {t.timer_id} is no longer set")
            return
        if timer.due_at > self.now:
            self.ignore("stale", f"timer {t.timer_id} is due at {timer.due_at.isoformat()}")
            return
        kind = timer.kind
        if kind == "retry" and timer.step is not None:
            self.emit(StepRetryDue(at=self.now, step=timer.step, attempt=timer.attempt or 0))
        elif kind in ("step_timeout", "heartbeat_timeout") and timer.step is not None:
            self.on_step_timeout(timer)
        elif kind == "wait_timeout":
            self.on_wait_timeout(timer.timer_id.partition(":")[2])
        elif kind == "sleep" and timer.step is not None:
            self.emit(SleepEnded(at=self.now, name=timer.step))
            node = self.defn.node(timer.step)
            self.enter(self.defn.next_node(node.name), previous=node.name, via="slept")
        elif kind == "saga_deadline":
            self.start_compensation("saga deadline passed")
        elif kind == "compensation_retry" and timer.step is not None:
            self.emit(
                CompensationRetryDue(at=self.now, step=timer.step, attempt=timer.attempt or 0)
            )
        else:
            self.ignore("not_applicable", f"timer kind {kind}")

    def on_step_timeout(self, timer: Timer) -> None:
        assert timer.step is not None
        st = self.s.steps[timer.step]
        attempt = timer.attempt or st.attempt
        kind = "heartbeat_timeout" if timer.kind == "heartbeat_timeout" else "step_timeout"
        self.emit(StepTimedOut(at=self.now, step=timer.step, attempt=attempt, kind=kind))
        node = self.defn.nodes.get(timer.step)
        if isinstance(node, ChildSpec):
            self.send(
                "commands",
                CancelSaga(
                    envelope=self.envelope(
                        st.task_id, node.definition.type_name, node.definition.version
                    ),
                    by=f"saga:{self.s.saga_id}",
                    reason="child saga timed out",
                ),
            )
        error = "HeartbeatTimedOut" if kind == "heartbeat_timeout" else "StepTimedOut"
        self.emit_failure(timer.step, attempt, True, error, f"attempt {attempt} timed out")

    def on_wait_timeout(self, name: str) -> None:
        wait = next((w for w in self.s.waits if w.name == name), None)
        self.emit(WaitTimedOut(at=self.now, name=name))
        if wait is not None and wait.kind == "tool_approval" and wait.agent is not None:
            _, tool_name, turn = parse_task_step(name)
            self.emit(
                AgentObservation(
                    at=self.now,
                    agent=wait.agent,
                    turn=turn or 0,
                    tool=tool_name,
                    ok=False,
                    content=f"the call of {tool_name} was not approved in time",
                )
            )
            return
        node = self.defn.node(name)
        assert isinstance(node, WaitSpec)
        self.apply_action(node.on_timeout, node, f"{name} timed out")

    # -- operator commands ----------------------------------------------------

    def on_cancel(self, c: CancelSaga) -> None:
        if self.compensating:
            self.ignore("not_applicable", "already compensating")
            return
        why = f": {c.reason}" if c.reason else ""
        self.start_compensation(f"cancelled by {c.by}{why}", final="cancelled")

    def on_pause(self, c: PauseSaga) -> None:
        if self.s.status == "paused":
            self.ignore("duplicate", "already paused")
            return
        self.emit(SagaPaused(at=self.now, by=c.by, reason=c.reason))

    def on_resume(self, c: ResumeSaga) -> None:
        if self.s.status != "paused":
            self.ignore("not_applicable", f"saga is {self.s.status}")
            return
        self.emit(SagaResumed(at=self.now, by=c.by, reason=c.reason))

    def on_retry_step(self, c: RetryStep) -> None:
        st = self.s.steps.get(c.step)
        if st is None:
            self.ignore("unknown_step", c.step)
            return
        if self.compensating:
            if st.compensation_status == "retry_wait":
                self.emit(
                    CompensationRetryDue(at=self.now, step=c.step, attempt=st.compensation_attempt)
                )
            else:
                self.ignore(
                    "not_applicable", f"compensation of {c.step} is {st.compensation_status}"
                )
            return
        if st.status not in ("failed", "retry_wait"):
            self.ignore("not_applicable", f"step {c.step} is {st.status}")
            return
        self.emit(StepRetryRequested(at=self.now, step=c.step, by=c.by, reason=c.reason))
        if self.s.status == "paused" and self.s.pause_reason == _failure_pause(c.step):
            self.emit(SagaResumed(at=self.now, by=c.by, reason=f"retry of {c.step}"))

    def on_skip_step(self, c: SkipStep) -> None:
        st = self.s.steps.get(c.step)
        node = self.defn.nodes.get(c.step)
        if st is None or not isinstance(node, StepSpec | ChildSpec):
            self.ignore("unknown_step", c.step)
            return
        if self.compensating or st.status not in (
            "pending",
            "ready",
            "running",
            "retry_wait",
            "failed",
        ):
            self.ignore("not_applicable", f"step {c.step} is {st.status}")
            return
        try:
            data = self.fold_result(node, c.result)
        except PayloadDecodeError as exc:
            self.ignore("not_applicable", f"skip result rejected: {exc}")
            return
        self.emit(
            StepSkipped(
                at=self.now,
                step=c.step,
                by=c.by,
                reason=c.reason,
                result=c.result,
                data=to_payload(data),
            )
        )
        if self.s.status == "paused" and self.s.pause_reason == _failure_pause(c.step):
            self.emit(SagaResumed(at=self.now, by=c.by, reason=f"skip of {c.step}"))

    # -- budgets --------------------------------------------------------------

    def check_budget(self) -> None:
        budget = self.defn.budget
        state = self.state
        if budget is None or state is None or state.is_terminal:
            return
        used = {
            "retries": state.retries_used,
            "llm_calls": state.usage.llm_calls,
            "tokens": state.usage.tokens_in + state.usage.tokens_out,
            "cost_micros": state.usage.cost_micros,
        }
        for kind, limit in budget.limits().items():
            if used[kind] > limit and kind not in self.s.budget_exceeded:
                self.emit(BudgetExceeded(at=self.now, kind=kind, limit=limit, used=used[kind]))
                if self.s.status != "paused" and not self.compensating:
                    self.emit(
                        SagaPaused(at=self.now, by="sagaline", reason=f"budget exceeded: {kind}")
                    )

    # -- agents ---------------------------------------------------------------

    def drive_agent(self, node: AgentSpec) -> bool:
        agent = self.s.agents.get(node.name)
        if agent is None:
            return False
        if agent.phase == "answered":
            self.enter(self.defn.next_node(node.name), previous=node.name, via="answered")
            return True
        if agent.phase == "idle":
            if agent.turn >= node.max_turns:
                reason = f"agent {node.name} used all {node.max_turns} turns"
                self.emit(AgentGaveUp(at=self.now, agent=node.name, turn=agent.turn, reason=reason))
                self.start_compensation(reason)
                return False
            turn = agent.turn + 1
            step_name = node.turn_step(turn)
            self.emit(AgentTurnStarted(at=self.now, agent=node.name, turn=turn, step=step_name))
            self.dispatch_turn(node, turn)
            return False
        if agent.phase == "thinking":
            st = self.s.steps.get(node.turn_step(agent.turn))
            if st is not None and st.status == "ready":
                self.dispatch_turn(node, agent.turn)
            return False
        if agent.phase == "tool" and agent.pending_tool_step and agent.pending_tool:
            st = self.s.steps.get(agent.pending_tool_step) or StepState(
                name=agent.pending_tool_step, run=1
            )
            if st.status in ("pending", "ready") and agent.pending_args is not None:
                spec = node.tools[agent.pending_tool]
                self.dispatch_task(
                    st,
                    args=agent.pending_args,
                    destination="tasks",
                    compensable=spec.compensable,
                    timeout=spec.timeout,
                    heartbeat=spec.heartbeat_timeout,
                    keep_args=True,
                )
        return False

    def dispatch_turn(self, node: AgentSpec, turn: int) -> None:
        step_name = node.turn_step(turn)
        agent = self.s.agents[node.name]
        args = AgentTurn(
            agent=node.name,
            turn=turn,
            max_turns=node.max_turns,
            data=json.loads(self.s.data.data or b"{}"),
            tools=[t.info() for t in node.tool_specs],
            history=[HistoryItem.model_validate(h.model_dump()) for h in agent.history],
        )
        st = self.s.steps.get(step_name) or StepState(name=step_name, run=1)
        self.dispatch_task(
            st,
            args=to_payload(args),
            destination="tasks",
            compensable=False,
            timeout=node.timeout,
            heartbeat=None,
        )

    def on_agent_decision(self, node: AgentSpec, turn: int, result: Payload | None) -> None:
        try:
            if result is None:
                raise PayloadDecodeError("the LLM step returned no decision")
            decision = from_payload(result, AgentDecision)
        except PayloadDecodeError as exc:
            self.agent_invalid(node, turn, None, None, f"invalid decision: {exc}")
            return
        if decision.answer is not None:
            self.emit(
                AgentTurnRecorded(
                    at=self.now,
                    agent=node.name,
                    turn=turn,
                    outcome="answer",
                    answer=decision.answer,
                    thought=decision.thought,
                )
            )
            data = self.data()
            if node.on_answer_fn is not None:
                data = node.on_answer_fn(self.saga, data, decision.answer)
            self.emit(
                AgentAnswered(
                    at=self.now,
                    agent=node.name,
                    turn=turn,
                    answer=decision.answer,
                    data=to_payload(data),
                )
            )
            return
        tool_name = decision.tool or ""
        arguments = json.dumps(decision.arguments, sort_keys=True)
        spec = node.tools.get(tool_name)
        if spec is None:
            known = ", ".join(node.tools)
            self.agent_invalid(
                node, turn, tool_name, arguments, f"unknown tool {tool_name!r}; tools: {known}"
            )
            return
        try:
            args = spec.args_type.model_validate(decision.arguments)
        except ValidationError as exc:
            self.agent_invalid(node, turn, tool_name, arguments, f"invalid arguments: {exc}")
            return
        self.emit(
            AgentTurnRecorded(
                at=self.now,
                agent=node.name,
                turn=turn,
                outcome="tool",
                tool=tool_name,
                arguments_json=arguments,
                thought=decision.thought,
            )
        )
        step_name = node.tool_step(tool_name, turn)
        self.emit(
            ToolCallRequested(
                at=self.now,
                agent=node.name,
                turn=turn,
                tool=tool_name,
                step=step_name,
                args=to_payload(args),
                needs_approval=spec.risky,
            )
        )
        if spec.risky:
            self.emit(
                WaitOpened(
                    at=self.now,
                    name=step_name,
                    kind="tool_approval",
                    timeout_at=self.now + node.approval_timeout,
                    agent=node.name,
                    tool_step=step_name,
                )
            )

    def agent_invalid(
        self, node: AgentSpec, turn: int, tool: str | None, arguments: str | None, error: str
    ) -> None:
        self.emit(
            AgentTurnRecorded(
                at=self.now,
                agent=node.name,
                turn=turn,
                outcome="invalid",
                tool=tool,
                arguments_json=arguments,
            )
        )
        self.emit(
            AgentObservation(
                at=self.now, agent=node.name, turn=turn, tool=tool, ok=False, content=error
            )
        )

    def on_tool_approval(self, wait: WaitState, sig: SignalSaga) -> None:
        agent_name = wait.agent or ""
        agent = self.s.agents[agent_name]
        self.emit(
            SignalAccepted(
                at=self.now,
                name=wait.name,
                by=sig.by,
                approved=sig.approved,
                note=sig.note,
                payload=sig.payload,
                data=self.s.data,
            )
        )
        _, tool_name, turn = parse_task_step(wait.name)
        if sig.approved:
            assert agent.pending_args is not None and tool_name is not None
            self.emit(
                ToolCallRequested(
                    at=self.now,
                    agent=agent_name,
                    turn=turn or agent.turn,
                    tool=tool_name,
                    step=wait.name,
                    args=agent.pending_args,
                    needs_approval=False,
                )
            )
            return
        note = f": {sig.note}" if sig.note else ""
        self.emit(
            AgentObservation(
                at=self.now,
                agent=agent_name,
                turn=turn or agent.turn,
                tool=tool_name,
                ok=False,
                content=f"the call of {tool_name} was rejected by {sig.by}{note}",
            )
        )


def _failure_pause(step: str) -> str:
    return f"step {step} failed permanently; retry or skip it"


def _find_wait(waits: list[WaitState], name: str) -> WaitState | None:
    for w in waits:
        if w.name == name:
            return w
    for w in waits:
        if w.kind == "tool_approval" and w.agent == name:
            return w
    return None


def _classify_success(st: StepState | None, task_id: str, key: str) -> IgnoreReason | None:
    """``None`` to accept a success reply, else why it is ignored.

    A success of an earlier attempt of the same execution (same idempotency
    key) is accepted while the step is not done: the effect happened.
    """
    if st is None:
        return "unknown_step"
    if st.status == "running" and st.task_id == task_id:
        return None
    if st.idempotency_key == key and st.status in ("running", "retry_wait", "ready", "abandoned"):
        return None
    if st.idempotency_key == key and st.status == "failed":
        return None
    if st.status == "skipped":
        return "late"
    if st.status == "succeeded":
        return "duplicate" if st.task_id == task_id else "late"
    if st.status == "pending":
        return "out_of_order"
    return "stale"


def _classify_failure(st: StepState | None, task_id: str) -> IgnoreReason | None:
    if st is None:
        return "unknown_step"
    if st.status == "running" and st.task_id == task_id:
        return None
    if st.task_id == task_id and st.status in ("succeeded", "failed", "retry_wait"):
        return "duplicate"
    if st.status == "pending":
        return "out_of_order"
    return "stale"


_HANDLERS: dict[type[Any], Any] = {
    SignalSaga: _Decider.on_signal,
    CancelSaga: _Decider.on_cancel,
    PauseSaga: _Decider.on_pause,
    ResumeSaga: _Decider.on_resume,
    RetryStep: _Decider.on_retry_step,
    SkipStep: _Decider.on_skip_step,
    StepSucceeded: _Decider.on_step_succeeded,
    StepFailed: _Decider.on_step_failed,
    StepHeartbeat: _Decider.on_heartbeat,
    CompensationSucceeded: _Decider.on_compensation_succeeded,
    CompensationFailed: _Decider.on_compensation_failed,
    TimerFired: _Decider.on_timer,
}
