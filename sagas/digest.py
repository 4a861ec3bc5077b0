"""The daily digest: a scheduled saga (issue 15, item 7).

:data:`DAILY_DIGEST` starts a :class:`DailyDigest` every morning at 08:00,
Paris time (cron ``0 8 * * *``; the wall clock follows daylight-saving
changes).  After a night with no orchestrator running, only the latest missed
morning starts (catch-up ``one``): one digest, never a pile of stale ones.
Each morning's saga id is ``daily-digest@<that morning in ISO 8601>``, so a
morning can only ever start one digest, whatever crashes or restarts.

The digest itself is one step that counts the refunds decided in the day
before the tick (from the payments the refund agent writes) and keeps
the numbers in its data; :data:`DEMO_DIGEST` is the same saga every five seconds
(catch-up ``all``), which ``sagaline demo`` runs beside the other sagas.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.policies import Retry
from sagaline.orchestrator.core.saga import Saga, step
from sagaline.orchestrator.core.schedule import Schedule
from sagaline.sagas.tables import Tables

__all__ = ["DAILY_DIGEST", "DEMO_DIGEST", "DailyDigest", "Digest", "DigestData"]


class DigestData(BaseModel):
    """The window a digest covers: ``[since, until)``, ``until`` being its tick."""

    since: datetime
    until: datetime
    refunds_paid: int | None = None
    refunded_cents: int | None = None


class Digest(BaseModel):
    """What the digest found: the refunds paid in the window."""

    refunds_paid: int
    refunded_cents: int


def _window(tick: datetime, length: timedelta) -> DigestData:
    return DigestData(since=tick - length, until=tick)


def _daily(tick: datetime) -> DigestData:
    return _window(tick, timedelta(days=1))


def _demo(tick: datetime) -> DigestData:
    return _window(tick, timedelta(seconds=5))


class DailyDigest(Saga[DigestData]):
    """Count the refunds paid in the window; the numbers end in the saga's data."""

    type_name = "daily_digest"

    @step(compensate=None, retry=Retry(max_attempts=3), timeout=timedelta(seconds=30))
    def compile_digest(self, ctx: StepContext, data: DigestData) -> Digest:
        t = Tables.current()
        row = ctx.db.execute(
            f"SELECT count(*), coalesce(sum(amount_cents), 0) FROM {t.payments}"
            " WHERE created_at >= %s AND created_at < %s",
            (data.since, data.until),
        ).fetchone()
        paid, cents = (int(row[0]), int(row[1])) if row else (0, 0)
        return Digest(refunds_paid=paid, refunded_cents=cents)

    @compile_digest.on_result
    def _found(self, data: DigestData, result: Digest) -> DigestData:
        return data.model_copy(update=result.model_dump())


DAILY_DIGEST = Schedule(
    "daily-digest",
    DailyDigest,
    _daily,
    cron="0 8 * * *",
    timezone="Europe/Paris",
    catch_up="one",
)

DEMO_DIGEST = Schedule(
    "demo-digest",
    DailyDigest,
    _demo,
    every=timedelta(seconds=5),
    timezone="Europe/Paris",
    catch_up="all",
)
