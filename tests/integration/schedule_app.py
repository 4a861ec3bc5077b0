"""The app of the schedule tests: one saga started every two seconds (catch-up ``all``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.saga import Saga, step
from sagaline.orchestrator.core.schedule import Schedule


class TickData(BaseModel):
    """The input of a scheduled saga: its tick."""

    tick: datetime


class Ticked(Saga[TickData]):
    """One step that no worker answers: the saga stays running, which is all the test needs."""

    type_name = "test.ticked"

    @step(compensate=None, uses_db=False)
    def work(self, ctx: StepContext, data: TickData) -> None:
        return None


EVERY_2S = Schedule(
    "every-2s",
    Ticked,
    lambda tick: TickData(tick=tick),
    every=timedelta(seconds=2),
    timezone="Europe/Paris",
    catch_up="all",
)

app = [Ticked, EVERY_2S]
