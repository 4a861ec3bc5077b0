"""The demo's schedule: the digest it starts every five seconds, checked tick by tick.

:data:`sagaline.sagas.digest.DEMO_DIGEST` runs in the demo's orchestrator
(``--app sagaline.sagas:DEMO_APP``), through the orchestrator's SIGKILL and
restart.  The check reads the final snapshots: every tick from the schedule's
declaration to its cursor has exactly one digest saga (catch-up ``all``: the
ticks of the downtime are started after the restart), and no other digest
saga exists.
"""

from __future__ import annotations

from collections.abc import Mapping

from sagaline.orchestrator.core.schedule_decide import schedule_data
from sagaline.orchestrator.demo.checks import Check
from sagaline.sagas.digest import DEMO_DIGEST
from sagaline.schemas.state import SagaState

__all__ = ["check_schedule", "schedule_event"]


def _digests(states: Mapping[str, SagaState]) -> list[str]:
    return [i for i in states if i.startswith(f"{DEMO_DIGEST.name}@")]


def check_schedule(states: Mapping[str, SagaState]) -> Check:
    """One digest saga per tick of the demo's schedule, none missing, none extra."""
    state = states.get(DEMO_DIGEST.schedule_id)
    if state is None:
        return Check("schedule", False, f"no snapshot of {DEMO_DIGEST.schedule_id}")
    data = schedule_data(state)
    ticks = DEMO_DIGEST.ticks_between(data.declared_at, data.cursor, 100_000) if data.cursor else []
    expected = {DEMO_DIGEST.saga_id(t) for t in ticks}
    seen = set(_digests(states))
    missing, extra = sorted(expected - seen), sorted(seen - expected)
    ok = bool(expected) and not missing and not extra and data.started == len(expected)
    detail = (
        f"{len(expected)} ticks of {DEMO_DIGEST.name} ({DEMO_DIGEST.describe()}), "
        f"{len(seen)} digest sagas, one per tick"
    )
    if not ok:
        detail = (
            f"{len(expected)} ticks, {len(seen)} digests; missing {missing[:3]}, extra {extra[:3]}"
        )
    return Check("schedule", ok, detail)


def schedule_event(states: Mapping[str, SagaState]) -> str:
    """One line for "what the demo did"."""
    done = sum(1 for i in _digests(states) if states[i].status == "completed")
    return (
        f"the {DEMO_DIGEST.name} schedule (every 5 s) started {len(_digests(states))} digest "
        f"sagas across the orchestrator's restart ({done} completed before the stop)"
    )
