"""The test kit's limiters: the real pure limiter, in memory, for one kit's saga.

``SagaTestKit`` routes each ``AcquireSlot``/``ReleaseSlot`` its saga sends
here and delivers the grants back at once, so a limited step dispatches in
the kit as it would on Kafka; a rate window that holds a step back opens
when ``kit.advance`` passes it.  :attr:`KitLimiters.states` shows each
limiter's snapshot (``LimiterData`` in its data).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sagaline.orchestrator.core.decision import Outgoing
from sagaline.orchestrator.core.limiter import decide_limiter
from sagaline.schemas.base import Envelope
from sagaline.schemas.limits import AcquireSlot, ReleaseSlot, SlotGranted
from sagaline.schemas.state import SagaState
from sagaline.schemas.timers import TimerFired

__all__ = ["KitLimiters"]


class KitLimiters:
    """Every limiter a kit's saga asked, by limiter id."""

    def __init__(self) -> None:
        self.states: dict[str, SagaState] = {}

    def _decide(
        self, lid: str, record: AcquireSlot | ReleaseSlot | TimerFired
    ) -> list[SlotGranted]:
        decision = decide_limiter(self.states.get(lid), record)
        if decision is None:
            return []
        self.states[lid] = decision.state
        return list(decision.grants)

    def route(self, outgoing: Sequence[Outgoing]) -> list[SlotGranted]:
        """Decide the slot requests among ``outgoing``; the grants they cause."""
        grants: list[SlotGranted] = []
        for out in outgoing:
            rec = out.record
            if isinstance(rec, AcquireSlot | ReleaseSlot):
                grants.extend(self._decide(rec.envelope.saga_id, rec))
        return grants

    def due(self, now: datetime) -> list[SlotGranted]:
        """Open the rate windows due by ``now``; the grants they cause."""
        grants: list[SlotGranted] = []
        for lid, state in list(self.states.items()):
            for timer in state.timers:
                if timer.due_at <= now:
                    fired = TimerFired(
                        envelope=state_envelope(state, now),
                        timer_id=timer.timer_id,
                        kind=timer.kind,
                        due_at=timer.due_at,
                    )
                    grants.extend(self._decide(lid, fired))
        return grants


def state_envelope(state: SagaState, now: datetime) -> Envelope:
    return Envelope(
        message_id=f"kit-{state.saga_id}-{now.isoformat()}",
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        occurred_at=now,
    )
