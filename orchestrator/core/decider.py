"""The pure decider: ``decide(definition, state, input) -> Decision``.

No I/O, no clock, no randomness: the time is the input's
``envelope.occurred_at``, outgoing message ids derive from the input's
message id, retry jitter from the saga id, step and attempt.  Every event
is applied with :func:`sagaline.orchestrator.core.fold.evolve` as it is decided, so
``Decision.state`` always equals the fold of the events.

This module handles each kind of input and lets the saga advance; what a
node does is its kind's business (``sagaline.orchestrator.core.nodes``),
looked up with :func:`~sagaline.orchestrator.core.nodes.kind_of`.  Operator
commands and budgets are :mod:`sagaline.orchestrator.core.decider_commands`.

Task step names: a step's own name; ``"<agent>#<turn>"`` for an agent's LLM
turn; ``"<agent>.<tool>#<turn>"`` for a tool call decided in that turn (see
:func:`sagaline.orchestrator.core.saga.parse_task_step`).  Task ``args`` are the saga data
for steps and compensations, an :class:`~sagaline.orchestrator.core.agents.AgentTurn` for
LLM turns and the validated tool arguments for tool calls.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sagaline.orchestrator.core import decider_commands as commands
from sagaline.orchestrator.core import limits
from sagaline.orchestrator.core.decision import (
    Decision,
    DecisionContext,
    Outgoing,
    derive_message_id,
)
from sagaline.orchestrator.core.errors import RoutingError
from sagaline.orchestrator.core.fork import decide_fork
from sagaline.orchestrator.core.nodes import compensation, kind_of
from sagaline.orchestrator.core.nodes.base import NodeKind
from sagaline.orchestrator.core.nodes.wait import reject_signal
from sagaline.orchestrator.core.payloads import PayloadDecodeError, from_payload
from sagaline.orchestrator.core.saga import Saga
from sagaline.orchestrator.core.trimming import trim
from sagaline.schemas.base import Envelope, Record
from sagaline.schemas.commands import (
    CancelSaga,
    PauseSaga,
    ResumeSaga,
    RetryStep,
    SignalSaga,
    SkipStep,
    StartSaga,
)
from sagaline.schemas.events import (
    CompensationRetryDue,
    HeartbeatRecorded,
    IgnoreReason,
    SagaStarted,
    StepRetryDue,
    StepTimedOut,
    WaitTimedOut,
)
from sagaline.schemas.journal import JOURNAL_INPUT_TYPES, JournalInput
from sagaline.schemas.limits import SlotGranted
from sagaline.schemas.replies import (
    CompensationFailed,
    CompensationSucceeded,
    StepFailed,
    StepHeartbeat,
    StepSucceeded,
)
from sagaline.schemas.state import SagaState, StepState, Timer, WaitState
from sagaline.schemas.timers import TimerFired
from sagaline.schemas.trusted import make

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

#: Every input the decider accepts: exactly the inputs a journal entry records.
Input = JournalInput
INPUT_TYPES: tuple[type[Record], ...] = tuple(JOURNAL_INPUT_TYPES.values())

_MAX_MOVES = 1000

#: The behaviour of a task whose node is not in the definition.
_NO_NODE: NodeKind[Any] = NodeKind()


def decide(definition: type[Saga[Any]], state: SagaState | None, input: Input) -> Decision:
    """Decide ``input`` against ``state`` under ``definition`` (pure)."""
    ctx = DecisionContext(definition, state, input)
    return ctx.decision(_run(ctx))


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


# -- entry --------------------------------------------------------------------


def _run(ctx: DecisionContext) -> str | None:
    inp = ctx.input
    if ctx.state is None:
        if isinstance(inp, StartSaga):
            return _start(ctx, inp)
        return f"no saga {ctx.env.saga_id!r} for {type(inp).__name__}"
    if isinstance(inp, StartSaga):
        same = inp.input_sha256 == ctx.s.input_sha256
        ctx.ignore("duplicate" if same else "conflict", "saga already started")
        return None
    if ctx.s.is_terminal:
        if isinstance(inp, SignalSaga):
            reject_signal(ctx, inp, f"saga is {ctx.s.status}")
        else:
            ctx.ignore("terminal", f"saga is {ctx.s.status}")
        return None
    _HANDLERS[type(inp)](ctx, inp)
    commands.check_budget(ctx)
    _advance(ctx)
    limits.settle(ctx)
    trim(ctx)
    return None


def _start(ctx: DecisionContext, cmd: StartSaga) -> str | None:
    try:
        from_payload(cmd.data, ctx.defn.data_type)
    except PayloadDecodeError as exc:
        return str(exc)
    if cmd.fork is not None:
        return decide_fork(ctx, cmd, decide)
    deadline = cmd.deadline_at
    if deadline is None and ctx.defn.deadline is not None:
        deadline = ctx.now + ctx.defn.deadline
    ctx.emit(
        make(
            SagaStarted,
            at=ctx.now,
            saga_id=ctx.env.saga_id,
            saga_type=ctx.defn.type_name,
            saga_version=ctx.defn.version,
            data=cmd.data,
            input_sha256=cmd.input_sha256,
            requested_by=cmd.requested_by,
            deadline_at=deadline,
            parent=cmd.parent,
        )
    )
    if limits.hold_saga(ctx):
        return None  # a saga-type limit: the first node is entered on the grant
    ctx.enter(ctx.defn.next_node(None), previous=None, via="start")
    _advance(ctx)
    return None


def _advance(ctx: DecisionContext) -> None:
    """Let the current node progress until the saga stops moving."""
    for _ in range(_MAX_MOVES):
        state = ctx.state
        if state is None or state.is_terminal or state.status == "paused":
            return
        if state.status == "compensating":
            compensation.drive(ctx)
            return
        if state.node is None:
            return
        node = ctx.defn.node(state.node)
        moved = kind_of(node).drive(ctx, node)
        if not moved and ctx.s.status == state.status:
            return
    raise RoutingError(f"{ctx.defn.type_name}: more than {_MAX_MOVES} moves in one decision")


# -- replies ------------------------------------------------------------------


def _on_step_succeeded(ctx: DecisionContext, r: StepSucceeded) -> None:
    st = ctx.s.steps.get(r.step)
    verdict = _classify_success(st, r.task_id, r.idempotency_key)
    if verdict is not None:
        ctx.ignore(verdict, f"{r.step} attempt {r.attempt}")
        return
    assert st is not None
    ctx.record_usage(r.step, r.usage)
    node = ctx.node_of(r.step)
    if node is None:
        _NO_NODE.on_succeeded(ctx, node, r, st)
    else:
        kind_of(node).on_succeeded(ctx, node, r, st)


def _on_step_failed(ctx: DecisionContext, r: StepFailed) -> None:
    st = ctx.s.steps.get(r.step)
    verdict = _classify_failure(st, r.task_id)
    if verdict is not None:
        ctx.ignore(verdict, f"{r.step} attempt {r.attempt}")
        return
    ctx.record_usage(r.step, r.usage)
    ctx.emit_failure(r.step, r.attempt, r.retryable, r.error_type, r.error_message)


def _on_heartbeat(ctx: DecisionContext, r: StepHeartbeat) -> None:
    st = ctx.s.steps.get(r.step)
    if st is None or st.task_id != r.task_id or st.status != "running":
        ctx.ignore("stale", f"heartbeat of {r.step} attempt {r.attempt}")
        return
    deadline = None
    if st.heartbeat_timeout_ms is not None:
        deadline = ctx.now + timedelta(milliseconds=st.heartbeat_timeout_ms)
    ctx.emit(
        make(
            HeartbeatRecorded,
            at=ctx.now,
            step=r.step,
            attempt=r.attempt,
            progress=r.progress,
            detail=r.detail,
            heartbeat_deadline_at=deadline,
        )
    )


# -- signals and timers -------------------------------------------------------


def _on_signal(ctx: DecisionContext, sig: SignalSaga) -> None:
    wait = _find_wait(ctx.s.waits, sig.name)
    if wait is None:
        open_names = ", ".join(w.name for w in ctx.s.waits) or "none"
        reject_signal(ctx, sig, f"not waiting for {sig.name!r} (open waits: {open_names})")
        return
    if wait.kind in ("approval", "tool_approval") and sig.approved is None:
        reject_signal(ctx, sig, "an approval needs approved=true or approved=false")
        return
    node = ctx.node_of(wait.name)
    if node is None:
        node = ctx.defn.node(wait.name)
    kind_of(node).on_signal(ctx, node, wait, sig)


def _on_timer(ctx: DecisionContext, t: TimerFired) -> None:
    timer = next((x for x in ctx.s.timers if x.timer_id == t.timer_id), None)
    if timer is None:
        ctx.ignore("stale", f"timer {t.timer_id} is no longer set")
        return
    if timer.due_at > ctx.now:
        ctx.ignore("stale", f"timer {t.timer_id} is due at {timer.due_at.isoformat()}")
        return
    kind = timer.kind
    if kind == "retry" and timer.step is not None:
        ctx.emit(make(StepRetryDue, at=ctx.now, step=timer.step, attempt=timer.attempt or 0))
    elif kind in ("step_timeout", "heartbeat_timeout") and timer.step is not None:
        _on_step_timeout(ctx, timer)
    elif kind == "wait_timeout":
        _on_wait_timeout(ctx, timer.timer_id.partition(":")[2])
    elif kind == "sleep" and timer.step is not None:
        node = ctx.defn.node(timer.step)
        kind_of(node).on_timer(ctx, node, timer)
    elif kind == "saga_deadline":
        ctx.start_compensation("saga deadline passed")
    elif kind == "compensation_retry" and timer.step is not None:
        ctx.emit(
            make(CompensationRetryDue, at=ctx.now, step=timer.step, attempt=timer.attempt or 0)
        )
    else:
        ctx.ignore("not_applicable", f"timer kind {kind}")


def _on_step_timeout(ctx: DecisionContext, timer: Timer) -> None:
    assert timer.step is not None
    st = ctx.s.steps[timer.step]
    attempt = timer.attempt or st.attempt
    kind = "heartbeat_timeout" if timer.kind == "heartbeat_timeout" else "step_timeout"
    ctx.emit(make(StepTimedOut, at=ctx.now, step=timer.step, attempt=attempt, kind=kind))
    node = ctx.defn.nodes.get(timer.step)
    if node is not None:
        kind_of(node).on_timed_out(ctx, node, st, timer)
    error = "HeartbeatTimedOut" if kind == "heartbeat_timeout" else "StepTimedOut"
    ctx.emit_failure(timer.step, attempt, True, error, f"attempt {attempt} timed out")


def _on_wait_timeout(ctx: DecisionContext, name: str) -> None:
    ctx.emit(make(WaitTimedOut, at=ctx.now, name=name))
    node = ctx.node_of(name)
    if node is None:
        node = ctx.defn.node(name)
    kind_of(node).on_wait_timeout(ctx, node, name)


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


_HANDLERS: dict[type[Any], Callable[[DecisionContext, Any], None]] = {
    SignalSaga: _on_signal,
    CancelSaga: commands.on_cancel,
    PauseSaga: commands.on_pause,
    ResumeSaga: commands.on_resume,
    RetryStep: commands.on_retry_step,
    SkipStep: commands.on_skip_step,
    StepSucceeded: _on_step_succeeded,
    StepFailed: _on_step_failed,
    StepHeartbeat: _on_heartbeat,
    CompensationSucceeded: compensation.on_succeeded,
    CompensationFailed: compensation.on_failed,
    TimerFired: _on_timer,
    SlotGranted: limits.on_granted,
}
