"""Fork: a new saga with the same input whose history copies another's up to a step.

:func:`plan_fork` (pure, run by the client on a journal it read) builds the
fork's ``StartSaga``: the source's data and a :class:`ForkOrigin` listing the
source's recorded inputs after its start, through the journal entry that
dispatched ``from_step``.  The decider (:func:`decide_fork`) decides them
again, one by one, under the fork's own definition, so the recorded results
are reused and nothing before ``from_step`` runs again; the last copied
input is decided at the fork's time, which dispatches ``from_step`` with the
current code.  Every event lands in the fork's first journal entry, ending
with ``SagaForked``; a strict replay re-decides that entry like any other.
:func:`fork_findings` lets the audit follow the link back to the source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sagaline.orchestrator.core.decision import Decision, derive_message_id
from sagaline.orchestrator.core.errors import SagalineError
from sagaline.schemas.base import Envelope, Record
from sagaline.schemas.commands import CopiedInput, ForkOrigin, StartSaga
from sagaline.schemas.events import ChildSagaRequested, SagaForked, StepDispatched
from sagaline.schemas.journal import JOURNAL_INPUT_TYPES, JournalEntry, JournalInput
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import ExecuteStep

if TYPE_CHECKING:
    from sagaline.orchestrator.core.decision import DecisionContext
    from sagaline.orchestrator.core.saga import Saga

__all__ = ["ForkError", "decide_fork", "fork_findings", "fork_origin_of", "plan_fork"]

DecideFn = Callable[[Any, SagaState | None, JournalInput], Decision]


class ForkError(SagalineError):
    """A fork cannot be planned from this journal (a user's mistake: one clear line)."""


def fork_origin_of(entries: Sequence[JournalEntry]) -> ForkOrigin | None:
    """The origin of a saga that is a fork (``None``: it is not)."""
    first = entries[0].input if entries else None
    return first.fork if isinstance(first, StartSaga) else None


def _dispatch_seq(entries: Sequence[JournalEntry], step: str) -> int | None:
    for i, entry in enumerate(entries):
        if any(isinstance(e, StepDispatched) and e.step == step for e in entry.events):
            return i
    return None


def plan_fork(
    entries: Sequence[JournalEntry],
    from_step: str,
    *,
    saga_id: str,
    version: int,
    now: datetime,
    requested_by: str | None = None,
) -> StartSaga:
    """The ``StartSaga`` of a fork of the saga whose whole journal is ``entries``."""
    if not entries or entries[0].seq != 1 or not isinstance(entries[0].input, StartSaga):
        raise ForkError("the source's journal must start with its StartSaga (seq 1)")
    source = entries[0].envelope.saga_id
    start = entries[0].input
    if start.fork is not None:
        raise ForkError(
            f"saga {source!r} is itself a fork of {start.fork.saga_id!r}: fork that saga instead"
        )
    at = _dispatch_seq(entries, from_step)
    if at is None:
        steps = sorted({e.step for x in entries for e in x.events if isinstance(e, StepDispatched)})
        raise ForkError(
            f"saga {source!r} never dispatched step {from_step!r} "
            f"(it dispatched: {', '.join(steps) or 'nothing'})"
        )
    copied = [CopiedInput.of(e.input) for e in entries[1 : at + 1] if e.input is not None]
    env = entries[0].envelope
    origin = ForkOrigin(
        saga_id=source,
        from_step=from_step,
        source_seq=entries[at].seq,
        source_version=env.saga_version,
        started_at=start.envelope.occurred_at,
        inputs=copied,
    )
    return StartSaga(
        envelope=Envelope(
            message_id=derive_message_id(saga_id, "fork", source, from_step),
            saga_id=saga_id,
            saga_type=env.saga_type,
            saga_version=version,
            occurred_at=now,
            correlation_id=saga_id,
        ),
        data=start.data,
        input_sha256=start.input_sha256,
        requested_by=requested_by,
        deadline_at=start.deadline_at,
        fork=origin,
    )


def _copied(item: CopiedInput) -> Record:
    record_type = JOURNAL_INPUT_TYPES.get(item.input_type)
    if record_type is None:
        raise ForkError(f"a fork cannot copy an input of type {item.input_type!r}")
    record = record_type.model_validate_json(item.record_json)
    if isinstance(record, StartSaga) and record.fork is not None:
        raise ForkError("a fork cannot copy the start of another fork")
    return record


def _readdress(record: Record, cmd: StartSaga, index: int, at: datetime | None) -> JournalInput:
    """``record`` as an input of the fork: its saga, ids derived from the fork's start."""
    assert cmd.fork is not None
    old: Envelope = getattr(record, "envelope")  # noqa: B009 - every input has one
    env = old.model_copy(
        update={
            "message_id": derive_message_id(cmd.envelope.message_id, "copy", index),
            "saga_id": cmd.envelope.saga_id,
            "saga_type": cmd.envelope.saga_type,
            "saga_version": cmd.envelope.saga_version,
            "occurred_at": at or old.occurred_at,
            "correlation_id": cmd.envelope.saga_id,
        }
    )
    updates: dict[str, Any] = {"envelope": env}
    prefix = f"{cmd.fork.saga_id}/"
    for name in ("idempotency_key", "task_id"):
        value = getattr(record, name, None)
        if isinstance(value, str) and value.startswith(prefix):
            updates[name] = f"{cmd.envelope.saga_id}/{value[len(prefix) :]}"
    return record.model_copy(update=updates)  # type: ignore[return-value]


def _inputs(cmd: StartSaga, now: datetime) -> list[JournalInput]:
    """The fork's start, then the copied inputs; the last one is decided at ``now``."""
    assert cmd.fork is not None
    records = [_copied(c) for c in cmd.fork.inputs]
    start_at = cmd.fork.started_at if records else now
    start = cmd.model_copy(
        update={
            "fork": None,
            "envelope": cmd.envelope.model_copy(
                update={
                    "message_id": derive_message_id(cmd.envelope.message_id, "copy", 0),
                    "occurred_at": start_at,
                }
            ),
        }
    )
    last = len(records)
    return [start] + [
        _readdress(r, cmd, i, now if i == last else None) for i, r in enumerate(records, 1)
    ]


def decide_fork(ctx: DecisionContext, cmd: StartSaga, decide: DecideFn) -> str | None:
    """Decide the start of a fork (``cmd.fork`` is set); a reason when it cannot start."""
    origin = cmd.fork
    assert origin is not None
    try:
        inputs = _inputs(cmd, ctx.now)
    except (ForkError, ValueError) as exc:
        return f"fork of {origin.saga_id}: {exc}"
    state: SagaState | None = None
    decisions: list[Decision] = []
    for i, inp in enumerate(inputs):
        decision = decide(ctx.defn, state, inp)
        if decision.rejected is not None:
            return f"fork of {origin.saga_id}: copied input {i} was refused: {decision.rejected}"
        decisions.append(decision)
        state = decision.state
    problem = _check(ctx.defn, origin, decisions)
    if problem is not None:
        return f"fork of {origin.saga_id}: {problem}"
    for decision in decisions:
        for event in decision.events:
            ctx.emit(event)
    ctx.emit(
        SagaForked(
            at=ctx.now,
            source_saga_id=origin.saga_id,
            source_version=origin.source_version,
            from_step=origin.from_step,
            source_seq=origin.source_seq,
            copied=len(origin.inputs),
        )
    )
    in_flight = {s.task_id for s in ctx.s.steps.values() if s.status == "running" and s.task_id}
    for decision in decisions:
        for out in decision.outgoing:
            if isinstance(out.record, ExecuteStep) and out.record.task_id in in_flight:
                ctx.send(out.destination, out.record)
    return None


def _check(defn: type[Saga[Any]], origin: ForkOrigin, decisions: list[Decision]) -> str | None:
    if any(isinstance(e, ChildSagaRequested) for d in decisions for e in d.events):
        return "a saga that started child sagas before the fork point cannot be forked"
    last = decisions[-1].events
    if not any(isinstance(e, StepDispatched) and e.step == origin.from_step for e in last):
        return (
            f"{defn.type_name} v{defn.version} does not dispatch {origin.from_step} where the "
            f"source did (journal seq {origin.source_seq})"
        )
    return None


def fork_findings(
    saga_id: str, entries: Sequence[JournalEntry], by_saga: Mapping[str, Sequence[JournalEntry]]
) -> list[str]:
    """Where a fork's copied history differs from its source's (empty: faithful or no fork)."""
    origin = fork_origin_of(entries)
    if origin is None:
        return []
    source = list(by_saga.get(origin.saga_id, ()))
    if not source or source[0].seq != 1:
        return [f"fork of {origin.saga_id}: the source's journal is not in the audited range"]
    problems: list[str] = []
    first = entries[0].input
    assert isinstance(first, StartSaga)
    source_start = source[0].input
    if not isinstance(source_start, StartSaga) or source_start.data != first.data:
        problems.append(f"fork of {origin.saga_id}: its input is not the source's input")
    recorded = [CopiedInput.of(e.input) for e in source[1:] if e.input is not None]
    if recorded[: len(origin.inputs)] != origin.inputs:
        problems.append(f"fork of {origin.saga_id}: the copied inputs are not the source's")
    at = next((e for e in source if e.seq == origin.source_seq), None)
    if at is None or not any(
        isinstance(e, StepDispatched) and e.step == origin.from_step for e in at.events
    ):
        problems.append(
            f"fork of {origin.saga_id}: the source did not dispatch {origin.from_step} "
            f"at seq {origin.source_seq}"
        )
    return problems
