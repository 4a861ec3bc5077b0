"""The runtime's face of the limiters: their inputs decided by the pure core.

A limiter (``limit:<name>:<key>``) is decided like a saga by whichever
orchestrator owns its partition: its snapshot is a ``SagaState`` of type
``sagaline.limiter`` on the state topic (restored on assignment), its window
timer is a state timer, and its grants (``SlotGranted``, keyed by the
waiting saga) are written to the commands topic in the same transaction as
the snapshot that records them.  A limiter writes no journal: the sagas
journal their side (``StepQueued``, ``SlotAcquired``, ``SlotReleased``).
"""

from __future__ import annotations

from sagaline.orchestrator.core.limiter import decide_limiter, is_limiter_input
from sagaline.orchestrator.runtime.errors import InputRejected
from sagaline.orchestrator.runtime.ports import Outcome, Outgoing
from sagaline.schemas.base import Record
from sagaline.schemas.state import SagaState

__all__ = ["is_limiter_input", "limiter_outcome"]


def limiter_outcome(state: Record | None, message: Record) -> Outcome:
    """Decide one limiter input (a request, or its window timer)."""
    if state is not None and not isinstance(state, SagaState):
        raise TypeError(f"expected a SagaState, got {type(state).__name__}")
    decision = decide_limiter(state, message)
    if decision is None:
        if state is None:
            raise InputRejected("UnknownLimiter", f"no limiter for {type(message).__name__}")
        return Outcome(state=state)
    return Outcome(
        state=decision.state,
        outgoing=tuple(Outgoing("commands", grant) for grant in decision.grants),
    )
