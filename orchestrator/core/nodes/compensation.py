"""Compensation: undoing the completed compensable steps in reverse order.

Not a node a saga declares, but the path every saga can take: started by a
permanent failure, a cancel, a wait's ``"compensate"`` outcome or an
expired deadline; it dispatches one ``CompensateStep`` at a time (after
the in-flight tasks have settled) and finishes the saga when the plan is
done.  Node kinds take part through
:meth:`~sagaline.orchestrator.core.nodes.base.NodeKind.on_compensation_started`
(a child saga is cancelled), ``compensation_retry`` and ``compensation_timeout``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sagaline.orchestrator.core.nodes.base import kind_of
from sagaline.orchestrator.core.policies import Retry
from sagaline.schemas.events import (
    CompensationAttemptFailed,
    CompensationDispatched,
    CompensationStarted,
    IgnoreReason,
    StepCompensated,
)
from sagaline.schemas.replies import CompensationFailed, CompensationSucceeded
from sagaline.schemas.state import StepState
from sagaline.schemas.tasks import CompensateStep
from sagaline.schemas.trusted import make

if TYPE_CHECKING:
    from sagaline.orchestrator.core.decision import DecisionContext

__all__ = ["drive", "on_failed", "on_succeeded", "policy", "start"]


def start(ctx: DecisionContext, reason: str, final: str = "compensated") -> None:
    """Plan the compensation of the completed compensable steps, newest first."""
    s = ctx.s
    plan = [
        n
        for n in reversed(s.completed_compensable)
        if s.steps[n].compensation_status != "compensated"
    ]
    ctx.emit(
        make(
            CompensationStarted,
            at=ctx.now,
            reason=reason,
            steps=plan,
            final_status="cancelled" if final == "cancelled" else "compensated",
        )
    )
    for name, st in ctx.s.steps.items():
        node = ctx.defn.nodes.get(name)
        if node is not None:
            kind_of(node).on_compensation_started(ctx, node, st, reason)


def drive(ctx: DecisionContext) -> None:
    """Dispatch the next compensation once nothing runs; finish when the plan is done."""
    s = ctx.s
    if any(st.status == "running" for st in s.steps.values()):
        return
    for name in s.compensation_plan:
        st = s.steps[name]
        status = st.compensation_status
        if status == "compensated":
            continue
        if status in ("ready", "none"):
            _dispatch(ctx, st)
        return
    ctx.finish(s.final_status or "compensated", s.compensation_reason)


def _dispatch(ctx: DecisionContext, st: StepState) -> None:
    attempt = st.compensation_attempt + 1
    key = f"{ctx.s.saga_id}/{st.name}/{max(st.run, 1)}/compensate"
    task_id = f"{key}/{attempt}"
    node = ctx.node_of(st.name)
    timeout = kind_of(node).compensation_timeout(node) if node is not None else None
    deadline = ctx.now + timeout if timeout is not None else None
    ctx.emit(
        make(
            CompensationDispatched,
            at=ctx.now,
            step=st.name,
            attempt=attempt,
            idempotency_key=key,
            task_id=task_id,
            destination=st.destination,
            deadline_at=deadline,
        )
    )
    ctx.send(
        st.destination,
        CompensateStep(
            envelope=ctx.envelope(),
            step=st.name,
            attempt=attempt,
            idempotency_key=key,
            task_id=task_id,
            args=st.args if st.args is not None else ctx.s.data,
            step_result=st.result,
            deadline_at=deadline,
        ),
    )


def policy(ctx: DecisionContext, step: str) -> Retry:
    """The retry policy of ``step``'s compensation: the node's own, else the saga's."""
    node = ctx.node_of(step)
    own = kind_of(node).compensation_retry(node) if node is not None else None
    return own if own is not None else ctx.defn.compensation_retry


def on_succeeded(ctx: DecisionContext, r: CompensationSucceeded) -> None:
    st = ctx.s.steps.get(r.step)
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
        ctx.ignore(reason, f"compensation of {r.step} attempt {r.attempt}")
        return
    ctx.emit(make(StepCompensated, at=ctx.now, step=r.step, attempt=r.attempt))


def on_failed(ctx: DecisionContext, r: CompensationFailed) -> None:
    st = ctx.s.steps.get(r.step)
    if st is None or st.compensation_task_id != r.task_id or st.compensation_status != "running":
        ctx.ignore("stale", f"compensation of {r.step} attempt {r.attempt}")
        return
    retry = policy(ctx, r.step)
    if r.retryable and retry.allows(r.attempt):
        retry_at = ctx.now + retry.delay(r.attempt, ctx.s.saga_id, r.step, "compensate")
        ctx.emit(
            make(
                CompensationAttemptFailed,
                at=ctx.now,
                step=r.step,
                attempt=r.attempt,
                retryable=True,
                error_type=r.error_type,
                error_message=r.error_message,
                retry_at=retry_at,
            )
        )
        return
    ctx.emit(
        make(
            CompensationAttemptFailed,
            at=ctx.now,
            step=r.step,
            attempt=r.attempt,
            retryable=r.retryable,
            error_type=r.error_type,
            error_message=r.error_message,
            final=True,
        )
    )
    ctx.finish("failed", f"compensation of {r.step} failed: {r.error_type}: {r.error_message}")
