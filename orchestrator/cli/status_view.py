"""One format for a saga's snapshot: text for people, a dict for ``--json``.

A step that was undone shows ``compensated`` (``compensation failed`` with the
error, ``compensating`` while it runs), not the ``succeeded`` it once was.
Finished steps that left the snapshot (it holds live state only) show from
its summary of the latest ones, after a count of the earlier ones (the
journal has them all: ``sagaline replay``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sagaline.schemas.state import SagaState, StepState, StepSummary

__all__ = ["shown_step_status", "summary", "text"]


def shown_step_status(step: StepState) -> str:
    """The status a person should see: compensation wins over the forward status."""
    compensation = step.compensation_status
    if compensation == "compensated":
        return "compensated"
    if compensation == "failed":
        return "compensation failed"
    if compensation in ("ready", "running", "retry_wait"):
        return "compensating"
    return step.status


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _step(step: StepState) -> dict[str, Any]:
    return {
        "status": shown_step_status(step),
        "forward_status": step.status,
        "compensation": step.compensation_status,
        "attempt": step.attempt,
        "compensation_attempt": step.compensation_attempt,
        "last_error": step.last_error,
        "completed_at": _iso(step.completed_at),
    }


def _retired(step: StepSummary) -> dict[str, Any]:
    return {
        "status": step.status,
        "forward_status": step.status,
        "compensation": "none",
        "attempt": step.attempt,
        "compensation_attempt": 0,
        "last_error": None,
        "completed_at": _iso(step.completed_at),
    }


def _steps(state: SagaState) -> dict[str, Any]:
    shown = {s.name: _retired(s) for s in state.recent_steps}
    shown.update((name, _step(st)) for name, st in state.steps.items())
    return shown


def _earlier(state: SagaState) -> int:
    """Finished steps neither in the snapshot nor in its summary of the latest."""
    return state.steps_retired - len(state.recent_steps)


def summary(state: SagaState) -> dict[str, Any]:
    """The snapshot as the ``--json`` document of ``status`` and ``wait``."""
    usage = state.usage
    return {
        "saga_id": state.saga_id,
        "saga_type": state.saga_type,
        "saga_version": state.saga_version,
        "status": state.status,
        "node": state.node,
        "node_kind": state.node_kind,
        "waits": [
            {
                "name": w.name,
                "kind": w.kind,
                "opened_at": _iso(w.opened_at),
                "deadline": _iso(w.timeout_at),
            }
            for w in state.waits
        ],
        "sleeping_until": _iso(state.sleeping_until),
        "slots": [
            {
                "step": x.step,
                "limiter": x.limiter_id,
                "status": x.status,
                "since": _iso(x.since),
            }
            for x in state.slots
        ],
        "steps": _steps(state),
        "earlier_steps": _earlier(state),
        "compensation_reason": state.compensation_reason,
        "budgets": {
            "llm_calls": usage.llm_calls,
            "tokens_in": usage.tokens_in,
            "tokens_out": usage.tokens_out,
            "cost_micros": usage.cost_micros,
            "retries_used": state.retries_used,
            "exceeded": list(state.budget_exceeded),
        },
        "started_at": _iso(state.started_at),
        "updated_at": _iso(state.updated_at),
        "finished_at": _iso(state.finished_at),
        "deadline_at": _iso(state.deadline_at),
        "outcome_reason": state.outcome_reason,
        "paused": state.status == "paused",
        "pause_reason": state.pause_reason,
    }


def _where(state: SagaState) -> str:
    if state.is_terminal:
        return "finished " + (_iso(state.finished_at) or "")
    node = f"{state.node} ({state.node_kind})" if state.node_kind else state.node or "-"
    if state.status == "paused" and state.pause_reason:
        return f"{node}; paused: {state.pause_reason}"
    return node


def _step_lines(state: SagaState) -> list[str]:
    if not state.steps and not state.recent_steps:
        return ["  steps: none yet"]
    width = max(len(n) for n in [*state.steps, *(s.name for s in state.recent_steps)])
    lines = ["  steps:"]
    if _earlier(state) > 0:
        lines.append(f"    ({_earlier(state)} earlier steps done; sagaline replay shows them)")
    for retired in state.recent_steps:
        if retired.name not in state.steps:
            extra = f"  (attempt {retired.attempt})" if retired.attempt > 1 else ""
            lines.append(f"    {retired.name:<{width}}  {retired.status}{extra}")
    for name, step in state.steps.items():
        shown = shown_step_status(step)
        extra = ""
        if shown == "compensation failed" or (shown == "failed" and step.last_error):
            extra = f"  ({step.last_error})" if step.last_error else ""
        elif step.attempt > 1:
            extra = f"  (attempt {step.attempt})"
        lines.append(f"    {name:<{width}}  {shown}{extra}")
    return lines


def _wait_lines(state: SagaState) -> list[str]:
    lines = []
    for w in state.waits:
        deadline = f"deadline {_iso(w.timeout_at)}" if w.timeout_at else "no deadline"
        lines.append(f"  waiting for: {w.name} ({w.kind}; {deadline})")
    if state.sleeping_until is not None:
        lines.append(f"  sleeping until {_iso(state.sleeping_until)}")
    for x in state.slots:
        what = "queued for a slot of" if x.status == "queued" else "holding a slot of"
        lines.append(f"  {x.step}: {what} {x.limiter_id} since {_iso(x.since)}")
    return lines


def text(state: SagaState) -> str:
    """The snapshot for a person (the same facts as :func:`summary`)."""
    usage = state.usage
    lines = [
        f"{state.saga_id}  [{state.saga_type} v{state.saga_version}]  {state.status}",
        f"  at: {_where(state)}",
    ]
    if state.outcome_reason:
        lines.append(f"  reason: {state.outcome_reason}")
    if state.compensation_reason and state.compensation_reason != state.outcome_reason:
        lines.append(f"  compensation: {state.compensation_reason}")
    lines += _wait_lines(state)
    lines += _step_lines(state)
    exceeded = f"; exceeded: {', '.join(state.budget_exceeded)}" if state.budget_exceeded else ""
    lines.append(
        f"  budgets used: llm calls {usage.llm_calls}, tokens {usage.tokens_in} in / "
        f"{usage.tokens_out} out, cost {usage.cost_micros / 1_000_000:.6f}, "
        f"retries {state.retries_used}{exceeded}"
    )
    return "\n".join(lines)
