"""Operator commands (cancel, pause, resume, retry, skip) and budgets, for the decider."""

from __future__ import annotations

from sagaline.orchestrator.core.decision import DecisionContext
from sagaline.orchestrator.core.nodes import kind_of
from sagaline.orchestrator.core.nodes.step import failure_pause_reason
from sagaline.orchestrator.core.payloads import PayloadDecodeError, to_payload
from sagaline.schemas.commands import CancelSaga, PauseSaga, ResumeSaga, RetryStep, SkipStep
from sagaline.schemas.events import (
    BudgetExceeded,
    CompensationRetryDue,
    SagaPaused,
    SagaResumed,
    StepRetryRequested,
    StepSkipped,
)
from sagaline.schemas.trusted import make

__all__ = [
    "check_budget",
    "is_current",
    "on_cancel",
    "on_pause",
    "on_resume",
    "on_retry_step",
    "on_skip_step",
]


def on_cancel(ctx: DecisionContext, c: CancelSaga) -> None:
    if ctx.compensating:
        ctx.ignore("not_applicable", "already compensating")
        return
    why = f": {c.reason}" if c.reason else ""
    if ctx.s.status == "paused":  # an operator's cancel overrides the pause
        ctx.emit(make(SagaResumed, at=ctx.now, by=c.by, reason="cancelled"))
    ctx.start_compensation(f"cancelled by {c.by}{why}", final="cancelled")


def on_pause(ctx: DecisionContext, c: PauseSaga) -> None:
    if ctx.s.status == "paused":
        ctx.ignore("duplicate", "already paused")
        return
    ctx.emit(make(SagaPaused, at=ctx.now, by=c.by, reason=c.reason))


def on_resume(ctx: DecisionContext, c: ResumeSaga) -> None:
    if ctx.s.status != "paused":
        ctx.ignore("not_applicable", f"saga is {ctx.s.status}")
        return
    ctx.emit(make(SagaResumed, at=ctx.now, by=c.by, reason=c.reason))


def on_retry_step(ctx: DecisionContext, c: RetryStep) -> None:
    st = ctx.s.steps.get(c.step)
    if st is None:
        ctx.ignore("unknown_step", c.step)
        return
    if ctx.compensating:
        if st.compensation_status == "retry_wait":
            ctx.emit(
                make(CompensationRetryDue, at=ctx.now, step=c.step, attempt=st.compensation_attempt)
            )
        else:
            ctx.ignore("not_applicable", f"compensation of {c.step} is {st.compensation_status}")
        return
    if st.status not in ("failed", "retry_wait") or not is_current(ctx, c.step):
        ctx.ignore("not_applicable", f"step {c.step} is {st.status}")
        return
    ctx.emit(make(StepRetryRequested, at=ctx.now, step=c.step, by=c.by, reason=c.reason))
    if ctx.s.status == "paused" and ctx.s.pause_reason == failure_pause_reason(c.step):
        ctx.emit(make(SagaResumed, at=ctx.now, by=c.by, reason=f"retry of {c.step}"))


def is_current(ctx: DecisionContext, step: str) -> bool:
    """Whether ``step`` is what the saga is on: its node, a branch, an agent's task."""
    s = ctx.s
    if step == s.node or step in s.branches:
        return True
    agent = s.agents.get(s.node or "")
    if agent is None:
        return False
    return step in (agent.pending_tool_step, f"{agent.name}#{agent.turn}")


def on_skip_step(ctx: DecisionContext, c: SkipStep) -> None:
    st = ctx.s.steps.get(c.step)
    node = ctx.defn.nodes.get(c.step)
    if st is None or node is None or not kind_of(node).skippable:
        ctx.ignore("unknown_step", c.step)
        return
    if (
        ctx.compensating
        or not is_current(ctx, c.step)
        or st.status not in ("pending", "ready", "running", "retry_wait", "failed")
    ):
        ctx.ignore("not_applicable", f"step {c.step} is {st.status}")
        return
    try:
        data = kind_of(node).fold_result(ctx, node, c.result)
    except PayloadDecodeError as exc:
        ctx.ignore("not_applicable", f"skip result rejected: {exc}")
        return
    ctx.emit(
        make(
            StepSkipped,
            at=ctx.now,
            step=c.step,
            by=c.by,
            reason=c.reason,
            result=c.result,
            data=to_payload(data),
        )
    )
    if ctx.s.status == "paused" and ctx.s.pause_reason == failure_pause_reason(c.step):
        ctx.emit(make(SagaResumed, at=ctx.now, by=c.by, reason=f"skip of {c.step}"))


def check_budget(ctx: DecisionContext) -> None:
    """Record each budget limit the saga has gone past, and pause it."""
    budget = ctx.defn.budget
    state = ctx.state
    if budget is None or state is None or state.is_terminal:
        return
    used = {
        "retries": state.retries_used,
        "llm_calls": state.usage.llm_calls,
        "tokens": state.usage.tokens_in + state.usage.tokens_out,
        "cost_micros": state.usage.cost_micros,
    }
    for kind, limit in budget.limits().items():
        if used[kind] > limit and kind not in ctx.s.budget_exceeded:
            ctx.emit(make(BudgetExceeded, at=ctx.now, kind=kind, limit=limit, used=used[kind]))
            if ctx.s.status != "paused" and not ctx.compensating:
                ctx.emit(
                    make(SagaPaused, at=ctx.now, by="sagaline", reason=f"budget exceeded: {kind}")
                )
