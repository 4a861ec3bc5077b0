"""How the slot events fold into ``SagaState.slots`` (used by ``fold.evolve``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sagaline.schemas.limits import SlotAcquired, SlotReleased, SlotState, StepQueued
from sagaline.schemas.state import SagaState

__all__ = ["SLOT_FOLDS"]


def _queued(s: SagaState, e: StepQueued) -> dict[str, Any]:
    slot = SlotState(
        step=e.step, limiter_id=e.limiter_id, holder_id=e.holder_id, status="queued", since=e.at
    )
    return {"slots": [*(x for x in s.slots if x.holder_id != e.holder_id), slot]}


def _acquired(s: SagaState, e: SlotAcquired) -> dict[str, Any]:
    return {
        "slots": [
            x.model_copy(update={"status": "held", "since": e.at})
            if x.holder_id == e.holder_id
            else x
            for x in s.slots
        ]
    }


def _released(s: SagaState, e: SlotReleased) -> dict[str, Any]:
    return {"slots": [x for x in s.slots if x.holder_id != e.holder_id]}


SLOT_FOLDS: dict[type[Any], Callable[[SagaState, Any], dict[str, Any]]] = {
    StepQueued: _queued,
    SlotAcquired: _acquired,
    SlotReleased: _released,
}
