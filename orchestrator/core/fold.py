"""Fold decision events into saga state: ``evolve`` and ``fold``.

``evolve`` needs no saga definition and no clock: every fact it uses is in the events,
so anyone (audit, replay, projections) folds a journal back into state without user code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sagaline.orchestrator.core.errors import OrchestratorError
from sagaline.orchestrator.core.fold_agents import AGENT_FOLDS, agent_of, with_agent
from sagaline.orchestrator.core.limit_folds import SLOT_FOLDS
from sagaline.schemas.base import Usage
from sagaline.schemas.events import (
    BudgetExceeded,
    ChildSagaRequested,
    CompensationAttemptFailed,
    CompensationDispatched,
    CompensationRetryDue,
    CompensationStarted,
    HeartbeatRecorded,
    InputIgnored,
    ModelFallback,
    NodeEntered,
    SagaEvent,
    SagaFinished,
    SagaForked,
    SagaPaused,
    SagaResumed,
    SagaStarted,
    SignalAccepted,
    SignalRejected,
    SleepEnded,
    SleepStarted,
    StateTrimmed,
    StepAttemptFailed,
    StepCompensated,
    StepCompleted,
    StepDispatched,
    StepRetryDue,
    StepRetryRequested,
    StepSkipped,
    StepTimedOut,
    UsageRecorded,
    WaitOpened,
    WaitTimedOut,
)
from sagaline.schemas.state import (
    RECENT_STEPS,
    AgentState,
    SagaState,
    StepState,
    StepSummary,
    Timer,
    WaitState,
)
from sagaline.schemas.trusted import make, replace

__all__ = ["FoldError", "evolve", "fold"]

_STEP_TIMER_KINDS = frozenset({"retry", "step_timeout", "heartbeat_timeout"})


class FoldError(OrchestratorError):
    """An event cannot apply to the state (a corrupt or misordered journal)."""


def fold(events: Iterable[SagaEvent], state: SagaState | None = None) -> SagaState | None:
    """Apply ``events`` in order, starting from ``state`` (``None``: before the start)."""
    for event in events:
        if state is None and isinstance(event, InputIgnored):
            continue
        state = evolve(state, event)
    return state


def evolve(state: SagaState | None, event: SagaEvent) -> SagaState:
    """The state after ``event``."""
    if isinstance(event, SagaStarted):
        if state is not None:
            raise FoldError(f"saga {state.saga_id} started twice")
        return _started(event)
    if state is None:
        raise FoldError(f"{type(event).__name__} before SagaStarted")
    if isinstance(event, InputIgnored):
        return state
    handler = _HANDLERS.get(type(event))
    if handler is None:  # pragma: no cover - every event type has a handler
        raise FoldError(f"no fold for {type(event).__name__}")
    updates = handler(state, event)
    updates.setdefault("updated_at", event.at)
    status = _settled_status(state, updates)
    if status is not None:
        updates["status"] = status
    return replace(state, updates)


def _started(e: SagaStarted) -> SagaState:
    timers = []
    if e.deadline_at is not None:
        timers.append(
            make(Timer, timer_id="saga_deadline", kind="saga_deadline", due_at=e.deadline_at)
        )
    return make(
        SagaState,
        saga_id=e.saga_id,
        saga_type=e.saga_type,
        saga_version=e.saga_version,
        data=e.data,
        started_at=e.at,
        updated_at=e.at,
        deadline_at=e.deadline_at,
        input_sha256=e.input_sha256,
        requested_by=e.requested_by,
        parent=e.parent,
        timers=timers,
    )


def _settled_status(state: SagaState, updates: Updates) -> str | None:
    """The status a running or waiting saga has after ``updates``: waiting when it
    waits (a signal, a sleep) with no step running, else running; ``None``: unchanged."""
    get = updates.get
    status = get("status", state.status)
    if status not in ("running", "waiting"):
        return None
    steps = get("steps", state.steps)
    busy = False
    for st in steps.values():
        if st.status == "running":
            busy = True
            break
    waiting = not busy and (
        bool(get("waits", state.waits)) or get("sleeping_until", state.sleeping_until) is not None
    )
    settled = "waiting" if waiting else "running"
    return None if settled == status else settled


def _drop(timers: list[Timer], keep: Callable[[Timer], bool]) -> list[Timer]:
    return [t for t in timers if keep(t)]


def _drop_step_timers(state: SagaState, step: str) -> list[Timer]:
    return _drop(state.timers, lambda t: not (t.step == step and t.kind in _STEP_TIMER_KINDS))


def _with_step(state: SagaState, step: StepState) -> dict[str, StepState]:
    steps = dict(state.steps)
    steps[step.name] = step
    return steps


def _step(state: SagaState, name: str) -> StepState:
    found = state.steps.get(name)
    return found if found is not None else make(StepState, name=name)


def _fresh_step(state: SagaState, name: str) -> StepState:
    old = state.steps.get(name)
    if old is None:
        return make(StepState, name=name, run=1)
    return make(
        StepState, name=name, run=old.run + 1, compensable=old.compensable, result=old.result
    )


Updates = dict[str, Any]


def _node_entered(s: SagaState, e: NodeEntered) -> Updates:
    up: Updates = {"node": e.node, "node_kind": e.kind, "branches": list(e.branches)}
    steps = dict(s.steps)
    if e.node is not None and e.kind in ("step", "child"):
        steps[e.node] = _fresh_step(s, e.node)
    for branch in e.branches:
        steps[branch] = _fresh_step(s, branch)
    up["steps"] = steps
    if e.node is not None and e.kind == "agent":
        up["agents"] = with_agent(s, make(AgentState, name=e.node))
    return up


def _dispatched(s: SagaState, e: StepDispatched) -> Updates:
    step = replace(
        _step(s, e.step),
        {
            "status": "running",
            "attempt": e.attempt,
            "run": e.run,
            "idempotency_key": e.idempotency_key,
            "task_id": e.task_id,
            "destination": e.destination,
            "compensable": e.compensable,
            "dispatched_at": e.at,
            "deadline_at": e.deadline_at,
            "heartbeat_deadline_at": e.heartbeat_deadline_at,
            "heartbeat_timeout_ms": e.heartbeat_timeout_ms,
            "args": e.args,
            "progress": None,
        },
    )
    timers = _drop_step_timers(s, e.step)
    if e.deadline_at is not None:
        timers.append(
            make(
                Timer,
                timer_id=f"step_timeout:{e.step}:{e.attempt}",
                kind="step_timeout",
                due_at=e.deadline_at,
                step=e.step,
                attempt=e.attempt,
            )
        )
    if e.heartbeat_deadline_at is not None:
        timers.append(_heartbeat_timer(e.step, e.attempt, e))
    return {"steps": _with_step(s, step), "timers": timers}


def _heartbeat_timer(step: str, attempt: int, e: StepDispatched | HeartbeatRecorded) -> Timer:
    assert e.heartbeat_deadline_at is not None
    return make(
        Timer,
        timer_id=f"heartbeat_timeout:{step}:{attempt}",
        kind="heartbeat_timeout",
        due_at=e.heartbeat_deadline_at,
        step=step,
        attempt=attempt,
    )


def _completed(s: SagaState, e: StepCompleted) -> Updates:
    old = _step(s, e.step)
    step = replace(
        old, {"status": "succeeded", "result": e.result, "completed_at": e.at, "last_error": None}
    )
    up: Updates = {
        "steps": _with_step(s, step),
        "timers": _drop_step_timers(s, e.step),
        "data": e.data,
    }
    if step.compensable:
        up["completed_compensable"] = [n for n in s.completed_compensable if n != e.step] + [e.step]
        compensating = s.status == "compensating" or s.paused_from == "compensating"
        if compensating and e.step not in s.compensation_plan:
            up["compensation_plan"] = [e.step, *s.compensation_plan]
            step = replace(step, {"compensation_status": "ready"})
            up["steps"] = _with_step(s, step)
    return up


def _attempt_failed(s: SagaState, e: StepAttemptFailed) -> Updates:
    old = _step(s, e.step)
    error = f"{e.error_type}: {e.error_message}"
    timers = _drop_step_timers(s, e.step)
    up: Updates = {"timers": timers}
    if e.retry_at is not None:
        step = replace(old, {"status": "retry_wait", "last_error": error})
        timers.append(
            make(
                Timer,
                timer_id=f"retry:{e.step}:{e.attempt}",
                kind="retry",
                due_at=e.retry_at,
                step=e.step,
                attempt=e.attempt,
            )
        )
        up["retries_used"] = s.retries_used + 1
    else:
        step = replace(old, {"status": "failed", "last_error": error})
    up["steps"] = _with_step(s, step)
    return up


def _timed_out(s: SagaState, e: StepTimedOut) -> Updates:
    return {"timers": _drop_step_timers(s, e.step)}


def _retry_due(s: SagaState, e: StepRetryDue) -> Updates:
    step = replace(_step(s, e.step), {"status": "ready"})
    return {"steps": _with_step(s, step), "timers": _drop_step_timers(s, e.step)}


def _heartbeat(s: SagaState, e: HeartbeatRecorded) -> Updates:
    step = replace(
        _step(s, e.step), {"progress": e.progress, "heartbeat_deadline_at": e.heartbeat_deadline_at}
    )
    timers = _drop(s.timers, lambda t: not (t.step == e.step and t.kind == "heartbeat_timeout"))
    if e.heartbeat_deadline_at is not None:
        timers.append(_heartbeat_timer(e.step, e.attempt, e))
    return {"steps": _with_step(s, step), "timers": timers}


def _usage(s: SagaState, e: UsageRecorded) -> Updates:
    u = s.usage
    return {
        "usage": make(
            Usage,
            llm_calls=u.llm_calls + e.usage.llm_calls,
            tokens_in=u.tokens_in + e.usage.tokens_in,
            tokens_out=u.tokens_out + e.usage.tokens_out,
            cost_micros=u.cost_micros + e.usage.cost_micros,
        )
    }


def _wait_opened(s: SagaState, e: WaitOpened) -> Updates:
    wait = WaitState(
        name=e.name,
        kind=e.kind,
        opened_at=e.at,
        timeout_at=e.timeout_at,
        agent=e.agent,
        tool_step=e.tool_step,
        **e.model_dump(include={"shown", "shown_sha256", "bound"}),
    )
    timers = list(s.timers)
    if e.timeout_at is not None:
        timers.append(
            make(Timer, timer_id=f"wait_timeout:{e.name}", kind="wait_timeout", due_at=e.timeout_at)
        )
    up: Updates = {"waits": [*s.waits, wait], "timers": timers}
    if e.agent is not None:
        up["agents"] = with_agent(s, replace(agent_of(s, e.agent), {"phase": "approval"}))
    return up


def _close_wait(s: SagaState, name: str) -> Updates:
    return {
        "waits": [w for w in s.waits if w.name != name],
        "timers": _drop(s.timers, lambda t: t.timer_id != f"wait_timeout:{name}"),
    }


def _signal_accepted(s: SagaState, e: SignalAccepted) -> Updates:
    up = _close_wait(s, e.name)
    up["data"] = e.data
    return up


def _wait_timed_out(s: SagaState, e: WaitTimedOut) -> Updates:
    return _close_wait(s, e.name)


def _sleep_started(s: SagaState, e: SleepStarted) -> Updates:
    timer = make(Timer, timer_id=f"sleep:{e.name}", kind="sleep", due_at=e.until, step=e.name)
    return {"sleeping_until": e.until, "timers": [*s.timers, timer]}


def _sleep_ended(s: SagaState, e: SleepEnded) -> Updates:
    return {
        "sleeping_until": None,
        "timers": _drop(s.timers, lambda t: t.timer_id != f"sleep:{e.name}"),
    }


def _budget(s: SagaState, e: BudgetExceeded) -> Updates:
    return {"budget_exceeded": [*s.budget_exceeded, e.kind]}


def _paused(s: SagaState, e: SagaPaused) -> Updates:
    return {"status": "paused", "paused_from": s.status, "pause_reason": e.reason}


def _resumed(s: SagaState, e: SagaResumed) -> Updates:
    return {"status": s.paused_from or "running", "paused_from": None, "pause_reason": None}


def _skipped(s: SagaState, e: StepSkipped) -> Updates:
    step = replace(
        _step(s, e.step), {"status": "skipped", "result": e.result, "completed_at": e.at}
    )
    return {"steps": _with_step(s, step), "timers": _drop_step_timers(s, e.step), "data": e.data}


def _retry_requested(s: SagaState, e: StepRetryRequested) -> Updates:
    step = replace(_step(s, e.step), {"status": "ready"})
    return {"steps": _with_step(s, step), "timers": _drop_step_timers(s, e.step)}


def _compensation_started(s: SagaState, e: CompensationStarted) -> Updates:
    steps = dict(s.steps)
    dropped: set[str] = set()
    for name, st in s.steps.items():
        if st.status in ("pending", "ready", "retry_wait"):
            steps[name] = replace(st, {"status": "abandoned"})
            dropped.add(name)
    for name in e.steps:
        steps[name] = replace(_step(s, name), {"compensation_status": "ready"})
    timers = _drop(
        s.timers,
        lambda t: t.kind in ("step_timeout", "heartbeat_timeout") and t.step not in dropped,
    )
    paused = s.status == "paused"
    return {
        # a paused saga stays paused: its compensation runs once it is resumed
        "status": "paused" if paused else "compensating",
        "paused_from": "compensating" if paused else None,
        "pause_reason": s.pause_reason if paused else None,
        "steps": steps,
        "timers": timers,
        "waits": [],
        "sleeping_until": None,
        "compensation_plan": list(e.steps),
        "compensation_reason": e.reason,
        "final_status": e.final_status,
    }


def _compensation_dispatched(s: SagaState, e: CompensationDispatched) -> Updates:
    step = replace(
        _step(s, e.step),
        {
            "compensation_status": "running",
            "compensation_attempt": e.attempt,
            "compensation_task_id": e.task_id,
            "compensation_idempotency_key": e.idempotency_key,
        },
    )
    return {"steps": _with_step(s, step)}


def _drop_compensation_timers(s: SagaState, step: str) -> list[Timer]:
    return _drop(s.timers, lambda t: not (t.step == step and t.kind == "compensation_retry"))


def _compensated(s: SagaState, e: StepCompensated) -> Updates:
    step = replace(_step(s, e.step), {"compensation_status": "compensated"})
    return {"steps": _with_step(s, step), "timers": _drop_compensation_timers(s, e.step)}


def _compensation_failed(s: SagaState, e: CompensationAttemptFailed) -> Updates:
    timers = _drop_compensation_timers(s, e.step)
    error = f"{e.error_type}: {e.error_message}"
    if e.retry_at is not None:
        status = "retry_wait"
        timers.append(
            make(
                Timer,
                timer_id=f"compensation_retry:{e.step}:{e.attempt}",
                kind="compensation_retry",
                due_at=e.retry_at,
                step=e.step,
                attempt=e.attempt,
            )
        )
    else:
        status = "failed"
    step = replace(_step(s, e.step), {"compensation_status": status, "last_error": error})
    return {"steps": _with_step(s, step), "timers": timers}


def _compensation_retry_due(s: SagaState, e: CompensationRetryDue) -> Updates:
    step = replace(_step(s, e.step), {"compensation_status": "ready"})
    return {"steps": _with_step(s, step), "timers": _drop_compensation_timers(s, e.step)}


def _finished(s: SagaState, e: SagaFinished) -> Updates:
    return {
        "status": e.status,
        "finished_at": e.at,
        "outcome_reason": e.reason,
        "timers": [],
        "waits": [],
        "sleeping_until": None,
        "paused_from": None,
    }


def _trimmed(s: SagaState, e: StateTrimmed) -> Updates:
    up: Updates = {}
    if e.steps:
        steps = dict(s.steps)
        recent = list(s.recent_steps)
        for name in e.steps:
            st = steps.pop(name, None)
            if st is not None:
                recent.append(
                    make(
                        StepSummary,
                        name=name,
                        status=st.status,
                        attempt=st.attempt,
                        completed_at=st.completed_at,
                    )
                )
        up["steps"] = steps
        up["recent_steps"] = recent[-RECENT_STEPS:]
        up["steps_retired"] = s.steps_retired + len(s.steps) - len(steps)
        up["attempts_retired"] = s.attempts_retired + sum(
            r.attempt for r in recent[len(s.recent_steps) :]
        )
    if e.agent_history:
        agents = dict(s.agents)
        for name, keep in e.agent_history.items():
            agent = agents.get(name)
            if agent is not None and len(agent.history) > keep:
                history = agent.history[len(agent.history) - keep :]
                agents[name] = replace(agent, {"history": history})
        up["agents"] = agents
    return up


def _no_change(s: SagaState, e: Any) -> Updates:
    return {}


_HANDLERS: dict[type[Any], Callable[[SagaState, Any], Updates]] = {
    NodeEntered: _node_entered,
    StepDispatched: _dispatched,
    StepCompleted: _completed,
    StepAttemptFailed: _attempt_failed,
    StepTimedOut: _timed_out,
    StepRetryDue: _retry_due,
    HeartbeatRecorded: _heartbeat,
    UsageRecorded: _usage,
    WaitOpened: _wait_opened,
    SignalAccepted: _signal_accepted,
    WaitTimedOut: _wait_timed_out,
    SleepStarted: _sleep_started,
    SleepEnded: _sleep_ended,
    BudgetExceeded: _budget,
    SagaPaused: _paused,
    SagaResumed: _resumed,
    StepSkipped: _skipped,
    StepRetryRequested: _retry_requested,
    CompensationStarted: _compensation_started,
    CompensationDispatched: _compensation_dispatched,
    StepCompensated: _compensated,
    CompensationAttemptFailed: _compensation_failed,
    CompensationRetryDue: _compensation_retry_due,
    SagaFinished: _finished,
    StateTrimmed: _trimmed,
    **dict.fromkeys((SignalRejected, ModelFallback, SagaForked, ChildSagaRequested), _no_change),
    **SLOT_FOLDS,
    **AGENT_FOLDS,
}
