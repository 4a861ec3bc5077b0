"""The saga's side of concurrency and rate limits: queue, acquire, release.

A step (or an agent's LLM turns) declared with ``limit=Limit(...)`` does not
dispatch until it holds a slot of its key's limiter:

* :func:`hold_back` (called by ``DecisionContext.dispatch_task``): with no
  slot yet, journal ``StepQueued`` and send ``AcquireSlot`` to the limiter
  (the commands topic, keyed by the limiter id); the step stays pending.
* :func:`on_granted` (the ``SlotGranted`` input): journal ``SlotAcquired``;
  the saga advances and the step dispatches.  A grant nobody waits for any
  more is released at once.
* :func:`settle` (after every decision): a slot whose step has ended
  (succeeded, failed, skipped), whose saga compensates or finished, or whose
  step moved on to another run is released (``SlotReleased`` and
  ``ReleaseSlot``), in the same transaction as the decision that ended it.

A slot is held across the attempts of one run of a step (retries keep it),
so a crashed worker's slot comes back when its step times out and ends;
an orchestrator crash loses nothing, since slots are saga state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sagaline.orchestrator.core.limit_spec import Limit, limiter_id
from sagaline.orchestrator.core.nodes.base import Node, parse_task_step
from sagaline.schemas.limits import (
    LIMITER_SAGA_TYPE,
    AcquireSlot,
    ReleaseSlot,
    SlotAcquired,
    SlotGranted,
    SlotHolder,
    SlotReleased,
    SlotState,
    StepQueued,
)

if TYPE_CHECKING:
    from sagaline.orchestrator.core.decision import DecisionContext
    from sagaline.schemas.state import StepState

__all__ = [
    "SAGA_SLOT",
    "Limit",
    "hold_back",
    "hold_saga",
    "limit_of",
    "on_granted",
    "release_all",
    "settle",
]

#: the ``step`` of a saga-type limit's slot (held from the start to the end)
SAGA_SLOT = "(saga)"

#: step statuses in which a held slot stays held (the run is not over)
_HOLDING = frozenset({"pending", "ready", "running", "retry_wait"})
#: step statuses in which a queued request stays queued
_WAITING = frozenset({"pending", "ready"})


def limit_of(node: Node | None, step: str) -> Limit[Any] | None:
    """The limit task ``step`` of ``node`` runs under (an agent's LLM turns, not its tools)."""
    limit = getattr(node, "limit", None)
    if not isinstance(limit, Limit):
        return None
    _, tool, _ = parse_task_step(step)
    return None if tool is not None else limit


def holder_of(ctx: DecisionContext, st: StepState) -> str:
    """The slot holder id of the current run of ``st`` (its idempotency key)."""
    return f"{ctx.s.saga_id}/{st.name}/{max(st.run, 1)}"


def hold_back(ctx: DecisionContext, st: StepState) -> bool:
    """``True`` when ``st`` must wait for a slot (asked for here, if not yet)."""
    limit = limit_of(ctx.node_of(st.name), st.name)
    if limit is None:
        return False
    holder = holder_of(ctx, st)
    slot = next((x for x in ctx.s.slots if x.holder_id == holder), None)
    if slot is not None:
        return slot.status != "held"
    _acquire(ctx, limit, st.name, holder)
    return True


def hold_saga(ctx: DecisionContext) -> bool:
    """A saga type's own limit (``limit = Limit(...)`` on the class): ask for its slot
    before the first node (``True``: the saga waits for it)."""
    limit = getattr(ctx.defn, "limit", None)
    if not isinstance(limit, Limit):
        return False
    _acquire(ctx, limit, SAGA_SLOT, f"{ctx.s.saga_id}/{SAGA_SLOT}/1")
    return True


def _acquire(ctx: DecisionContext, limit: Limit[Any], step: str, holder: str) -> None:
    key = limit.key_of(ctx.data())
    lid = limiter_id(limit.name, key)
    ctx.emit(StepQueued(at=ctx.now, step=step, limiter_id=lid, holder_id=holder))
    ctx.send(
        "commands",
        AcquireSlot(
            envelope=ctx.envelope(saga_id=lid, saga_type=LIMITER_SAGA_TYPE, version=1),
            name=limit.name,
            key=key,
            holder=SlotHolder(
                holder_id=holder,
                saga_id=ctx.s.saga_id,
                saga_type=ctx.s.saga_type,
                saga_version=ctx.s.saga_version,
                step=step,
                at=ctx.now,
            ),
            max_running=limit.max_running,
            max_starts=limit.max_starts,
            per_ms=limit.per_ms,
        ),
    )


def _release(ctx: DecisionContext, slot: SlotState, reason: str) -> None:
    ctx.emit(
        SlotReleased(
            at=ctx.now,
            step=slot.step,
            limiter_id=slot.limiter_id,
            holder_id=slot.holder_id,
            reason=reason,
        )
    )
    _send_release(ctx, slot.limiter_id, slot.holder_id, reason)


def _send_release(ctx: DecisionContext, lid: str, holder: str, reason: str) -> None:
    ctx.send(
        "commands",
        ReleaseSlot(
            envelope=ctx.envelope(saga_id=lid, saga_type=LIMITER_SAGA_TYPE, version=1),
            holder_id=holder,
            reason=reason,
        ),
    )


def on_granted(ctx: DecisionContext, grant: SlotGranted) -> None:
    """The limiter granted a slot: the step holds it (or gives it back if it left)."""
    slot = next((x for x in ctx.s.slots if x.holder_id == grant.holder_id), None)
    if slot is None or slot.status != "queued":
        ctx.ignore("stale", f"slot of {grant.step} from {grant.limiter_id}")
        if slot is None and grant.holder_id.startswith(f"{ctx.s.saga_id}/"):
            # ours, but no longer wanted (a fork's copied grant names its source's slot)
            _send_release(ctx, grant.limiter_id, grant.holder_id, "not waiting")
        return
    ctx.emit(
        SlotAcquired(
            at=ctx.now,
            step=slot.step,
            limiter_id=slot.limiter_id,
            holder_id=slot.holder_id,
            queued_at=grant.queued_at,
        )
    )
    if slot.step == SAGA_SLOT and ctx.s.node is None and not ctx.compensating:
        ctx.enter(ctx.defn.next_node(None), previous=None, via="start")


def _why_release(ctx: DecisionContext, slot: SlotState) -> str | None:
    """Why ``slot`` must go now, or ``None`` while it is still needed."""
    s = ctx.s
    if slot.step == SAGA_SLOT:  # held to the end; a queued one leaves on compensation
        if s.is_terminal:
            return f"saga {s.status}"
        return "saga compensating" if slot.status == "queued" and ctx.compensating else None
    st = s.steps.get(slot.step)
    mine = st is not None and holder_of(ctx, st) == slot.holder_id
    allowed = _HOLDING if slot.status == "held" else _WAITING
    if st is not None and mine and st.status not in allowed:
        return f"step {st.status}"
    if s.is_terminal:
        return f"saga {s.status}"
    if st is None:
        return None if _turn_waits(ctx, slot) else "step gone"
    if not mine:
        return "step ran again"
    if slot.status == "held" and st.status == "running":
        return None  # a worker may be running it, whatever the saga does meanwhile
    if ctx.compensating:
        return "saga compensating"
    return None


def _turn_waits(ctx: DecisionContext, slot: SlotState) -> bool:
    """An agent's LLM turn queued before its first dispatch (no step state yet)."""
    name, tool, turn = parse_task_step(slot.step)
    agent = ctx.s.agents.get(name)
    return (
        slot.status == "queued"
        and tool is None
        and agent is not None
        and agent.phase == "thinking"
        and agent.turn == turn
    )


def release_all(ctx: DecisionContext, reason: str) -> None:
    """The saga is ending: every slot goes back (a step that ended says so)."""
    for slot in list(ctx.s.slots):
        _release(ctx, slot, _why_release(ctx, slot) or reason)


def settle(ctx: DecisionContext) -> None:
    """Release every slot whose step (or saga) no longer needs it."""
    if ctx.state is None:
        return
    for slot in list(ctx.s.slots):
        reason = _why_release(ctx, slot)
        if reason is not None:
            _release(ctx, slot, reason)
