"""``ScheduleTestKit``: a schedule driven by its pure decisions with a fake clock.

The kit keeps only what the runtime commits: the schedule's snapshot and the
``StartSaga`` commands of its ticks.  A decision taken with ``crash=True`` is
dropped whole (its starts and its new cursor together, as an aborted Kafka
transaction drops them).  The clock moves three ways::

    kit = ScheduleTestKit(MORNINGS, now=datetime(2026, 3, 28, tzinfo=UTC))
    kit.advance(days=2)      # an orchestrator runs: each tick fires when it is due
    kit.down(days=3)         # none runs: the clock moves, nothing fires ...
    kit.restart()            # ... until one starts again (and declares the schedule)
    kit.jump(hours=-1)       # the wall clock jumps (either way): what is due fires
    kit.started_ids          # every saga id started, in order
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sagaline.orchestrator.core.errors import TestKitError
from sagaline.orchestrator.core.schedule import SCHEDULE_SAGA_TYPE, Schedule
from sagaline.orchestrator.core.schedule_decide import (
    ScheduleData,
    decide_schedule,
    declaration,
    schedule_data,
    tick_input,
)
from sagaline.schemas.base import Envelope
from sagaline.schemas.commands import PauseSaga, ResumeSaga, StartSaga
from sagaline.schemas.state import SagaState
from sagaline.schemas.timers import TimerFired

__all__ = ["ScheduleTestKit"]

#: more firings than this in one call means the schedule never catches up
_MAX_FIRINGS = 100_000


class ScheduleTestKit:
    """Drive ``schedule`` through declarations, ticks, crashes and clock jumps."""

    def __init__(self, schedule: Schedule[Any], *, now: datetime | None = None) -> None:
        self.schedule = schedule
        self.now = now or datetime(2030, 1, 1, tzinfo=UTC)
        self.state: SagaState | None = None
        self.starts: list[StartSaga] = []
        #: ``(time, state after)`` of every committed tick decision that moved the cursor
        self.ticks: list[tuple[datetime, ScheduleData]] = []
        self.restart()

    # -- what was committed ------------------------------------------------------

    @property
    def started_ids(self) -> list[str]:
        """The saga id of every committed start, in order."""
        return [s.envelope.saga_id for s in self.starts]

    @property
    def data(self) -> ScheduleData:
        """The schedule's committed state."""
        if self.state is None:
            raise TestKitError(f"schedule {self.schedule.name} was never declared")
        return schedule_data(self.state)

    @property
    def next_due(self) -> datetime | None:
        """When the tick timer fires next (``None`` while paused)."""
        if self.state is None or not self.state.timers:
            return None
        return self.state.timers[0].due_at

    # -- inputs --------------------------------------------------------------------

    def _commit(self, message: object, crash: bool) -> None:
        decision = decide_schedule(self.schedule, self.state, message)
        if decision.rejected is not None:
            raise TestKitError(decision.rejected)
        if crash:
            return
        if isinstance(message, TimerFired) and decision.state is not self.state:
            assert decision.state is not None
            self.ticks.append((message.envelope.occurred_at, schedule_data(decision.state)))
        self.state = decision.state
        self.starts.extend(decision.starts)

    def restart(self, *, crash: bool = False) -> None:
        """An orchestrator starts: it declares the schedule, then fires what is due."""
        message_id = str(uuid.uuid4())
        self._commit(declaration(self.schedule, at=self.now, message_id=message_id), crash)
        self.fire_due()

    def fire(self, *, crash: bool = False) -> bool:
        """Fire the tick timer if it is due now; ``False`` when it is not."""
        due = self.next_due
        if self.state is None or due is None or due > self.now:
            return False
        message = tick_input(self.state, self.now)
        assert message is not None
        self._commit(message, crash)
        return True

    def fire_due(self) -> None:
        """Fire until nothing is due (``catch_up="all"`` may take several firings)."""
        for _ in range(_MAX_FIRINGS):
            if not self.fire():
                return
        raise TestKitError(f"schedule {self.schedule.name} never caught up")

    def pause(self, by: str = "test", reason: str | None = None) -> None:
        self._commit(PauseSaga(envelope=self._envelope(), by=by, reason=reason), False)

    def resume(self, by: str = "test", reason: str | None = None) -> None:
        self._commit(ResumeSaga(envelope=self._envelope(), by=by, reason=reason), False)
        self.fire_due()

    def _envelope(self) -> Envelope:
        return Envelope(
            message_id=str(uuid.uuid4()),
            saga_id=self.schedule.schedule_id,
            saga_type=SCHEDULE_SAGA_TYPE,
            occurred_at=self.now,
        )

    # -- the clock -------------------------------------------------------------------

    def advance(self, delta: timedelta | None = None, **kw: float) -> None:
        """An orchestrator runs for ``delta``: each tick fires when it is due."""
        until = self.now + (delta if delta is not None else timedelta(**kw))
        for _ in range(_MAX_FIRINGS):
            due = self.next_due
            if due is None or due > until:
                break
            self.now = max(self.now, due)
            self.fire_due()
        else:
            raise TestKitError(f"schedule {self.schedule.name} fired too often")
        self.now = max(self.now, until)

    def down(self, delta: timedelta | None = None, **kw: float) -> None:
        """No orchestrator runs for ``delta``: the clock moves and nothing fires."""
        self.now += delta if delta is not None else timedelta(**kw)

    def jump(self, delta: timedelta | None = None, **kw: float) -> None:
        """The wall clock jumps by ``delta`` (negative: back); what is due then fires."""
        self.now += delta if delta is not None else timedelta(**kw)
        self.fire_due()
