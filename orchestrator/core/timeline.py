"""A saga's history as a human timeline, from its journal entries alone (pure).

:func:`build_timeline` walks one saga's entries in order and collects what an
auditor asks about: every recorded input and the decisions taken from it,
step attempts and their outcomes, approvals with the approver's identity,
compensations, the terminal status, usage and the time between entries.
It needs no saga definition and no infrastructure.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sagaline.schemas.base import Record
from sagaline.schemas.events import (
    CompensationAttemptFailed,
    CompensationDispatched,
    CompensationStarted,
    InputIgnored,
    SagaEvent,
    SagaFinished,
    SagaStarted,
    SignalAccepted,
    SignalRejected,
    StepAttemptFailed,
    StepCompensated,
    StepCompleted,
    StepDispatched,
    StepSkipped,
    StepTimedOut,
    UsageRecorded,
    WaitOpened,
    WaitTimedOut,
)
from sagaline.schemas.journal import JournalEntry

__all__ = [
    "Approval",
    "Attempt",
    "Compensation",
    "SagaTimeline",
    "TimelineItem",
    "build_timeline",
    "describe_event",
    "describe_input",
    "render_timeline",
]

_SUMMARY_FIELDS = (
    "node",
    "step",
    "attempt",
    "name",
    "kind",
    "by",
    "requested_by",
    "approved",
    "status",
    "reason",
    "error_type",
    "input_type",
    "via",
    "steps",
    "tool",
    "turn",
)


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


@functools.cache
def _summary_fields(model: type[Record]) -> tuple[str, ...]:
    return tuple(key for key in _SUMMARY_FIELDS if key in model.model_fields)


def _summary(record: Record, name: str) -> str:
    parts = []
    for key in _summary_fields(type(record)):
        value = getattr(record, key)
        if value is None or value == [] or value == "":
            continue
        parts.append(f"{key}={_short(value)}")
    return f"{name}({', '.join(parts)})" if parts else name


def describe_event(event: SagaEvent) -> str:
    """One line naming the event and its key fields."""
    return _summary(event, event.event)


def describe_input(entry: JournalEntry) -> str:
    """One line naming the recorded input and its key fields."""
    if entry.input is None:
        return entry.input_type or "(no input)"
    return _summary(entry.input, type(entry.input).__name__)


@dataclass
class TimelineItem:
    """One journal entry: the input and what was decided from it."""

    seq: int
    at: datetime
    since_start_s: float
    since_previous_s: float
    input_type: str | None
    input: str
    message_id: str | None
    events: list[str]


@dataclass
class Attempt:
    """One dispatched attempt of a step and how it ended."""

    step: str
    attempt: int
    run: int
    idempotency_key: str
    dispatched_at: datetime
    outcome: str = "running"
    ended_at: datetime | None = None
    duration_s: float | None = None
    error: str | None = None


@dataclass
class Approval:
    """A wait for a person or system: who decided, how and when."""

    name: str
    kind: str
    opened_at: datetime
    outcome: str = "open"
    by: str | None = None
    note: str | None = None
    resolved_at: datetime | None = None
    waited_s: float | None = None


@dataclass
class Compensation:
    """The undo of one completed step."""

    step: str
    attempts: int
    dispatched_at: datetime
    outcome: str = "running"
    ended_at: datetime | None = None


@dataclass
class SagaTimeline:
    """One saga's history, ready to print or to dump as JSON."""

    saga_id: str
    saga_type: str
    saga_version: int
    status: str = "running"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    outcome_reason: str | None = None
    first_seq: int = 1
    last_seq: int = 0
    items: list[TimelineItem] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    approvals: list[Approval] = field(default_factory=list)
    rejected_signals: list[str] = field(default_factory=list)
    compensations: list[Compensation] = field(default_factory=list)
    ignored_inputs: int = 0
    usage: dict[str, int] = field(
        default_factory=lambda: {"llm_calls": 0, "tokens_in": 0, "tokens_out": 0, "cost_micros": 0}
    )

    @property
    def partial(self) -> bool:
        """True when the history does not start at the saga's first entry (``--since``)."""
        return self.first_seq != 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601 strings)."""
        data = _jsonable(asdict(self))
        assert isinstance(data, dict)
        data["partial"] = self.partial
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _seconds(later: datetime, earlier: datetime | None) -> float:
    return 0.0 if earlier is None else round((later - earlier).total_seconds(), 3)


class _Builder:
    def __init__(self, first: JournalEntry) -> None:
        env = first.envelope
        self.t = SagaTimeline(env.saga_id, env.saga_type, env.saga_version, first_seq=first.seq)
        self.origin: datetime | None = None
        self.previous: datetime | None = None
        self.open_attempts: dict[str, Attempt] = {}
        self.open_waits: dict[str, Approval] = {}
        self.open_comps: dict[str, Compensation] = {}

    def entry(self, entry: JournalEntry) -> None:
        at = entry.envelope.occurred_at
        if self.origin is None:
            self.origin = at
        self.t.items.append(
            TimelineItem(
                seq=entry.seq,
                at=at,
                since_start_s=_seconds(at, self.origin),
                since_previous_s=_seconds(at, self.previous),
                input_type=entry.input_type,
                input=describe_input(entry),
                message_id=entry.input.envelope.message_id if entry.input is not None else None,
                events=[describe_event(e) for e in entry.events],
            )
        )
        self.previous = at
        self.t.last_seq = entry.seq
        for event in entry.events:
            self.event(event)

    def event(self, e: SagaEvent) -> None:
        t = self.t
        if isinstance(e, SagaStarted):
            t.started_at = e.at
        elif isinstance(e, StepDispatched):
            attempt = Attempt(e.step, e.attempt, e.run, e.idempotency_key, e.at)
            t.attempts.append(attempt)
            self.open_attempts[e.step] = attempt
        elif isinstance(e, StepCompleted | StepAttemptFailed | StepTimedOut):
            self.end_attempt(e)
        elif isinstance(e, StepSkipped):
            t.attempts.append(Attempt(e.step, 0, 0, "", e.at, "skipped by " + e.by, e.at, 0.0))
        elif isinstance(e, UsageRecorded):
            for key in t.usage:
                t.usage[key] += int(getattr(e.usage, key))
        elif isinstance(e, WaitOpened):
            wait = Approval(e.name, e.kind, e.at)
            t.approvals.append(wait)
            self.open_waits[e.name] = wait
        elif isinstance(e, SignalAccepted | WaitTimedOut):
            self.resolve_wait(e)
        elif isinstance(e, SignalRejected):
            t.rejected_signals.append(f"{e.name} by {e.by}: {e.reason}")
        elif isinstance(e, CompensationStarted):
            self.close_waits(f"closed: compensating ({e.reason})")
        elif isinstance(e, CompensationDispatched):
            comp = self.open_comps.get(e.step)
            if comp is None:
                comp = Compensation(e.step, 0, e.at)
                t.compensations.append(comp)
                self.open_comps[e.step] = comp
            comp.attempts += 1
        elif isinstance(e, StepCompensated | CompensationAttemptFailed):
            self.end_compensation(e)
        elif isinstance(e, InputIgnored):
            t.ignored_inputs += 1
        elif isinstance(e, SagaFinished):
            self.close_waits(f"closed: saga {e.status}")
            t.status = e.status
            t.finished_at = e.at
            t.outcome_reason = e.reason
            if t.started_at is not None:
                t.duration_s = _seconds(e.at, t.started_at)

    def close_waits(self, outcome: str) -> None:
        for wait in self.open_waits.values():
            wait.outcome = outcome
        self.open_waits.clear()

    def end_attempt(self, e: StepCompleted | StepAttemptFailed | StepTimedOut) -> None:
        attempt = self.open_attempts.pop(e.step, None)
        if attempt is None:
            return
        attempt.ended_at = e.at
        attempt.duration_s = _seconds(e.at, attempt.dispatched_at)
        if isinstance(e, StepCompleted):
            attempt.outcome = "succeeded"
        elif isinstance(e, StepTimedOut):
            attempt.outcome = e.kind
        else:
            attempt.outcome = "failed (final)" if e.final or e.retry_at is None else "failed"
            attempt.error = f"{e.error_type}: {e.error_message}"

    def resolve_wait(self, e: SignalAccepted | WaitTimedOut) -> None:
        wait = self.open_waits.pop(e.name, None)
        if wait is None:
            return
        wait.resolved_at = e.at
        wait.waited_s = _seconds(e.at, wait.opened_at)
        if isinstance(e, WaitTimedOut):
            wait.outcome = "timed out"
            return
        wait.by = e.by
        wait.note = e.note
        if e.approved is None:
            wait.outcome = "signalled"
        else:
            wait.outcome = "approved" if e.approved else "rejected"

    def end_compensation(self, e: StepCompensated | CompensationAttemptFailed) -> None:
        comp = self.open_comps.get(e.step)
        if comp is None:
            return
        if isinstance(e, StepCompensated):
            comp.outcome = "compensated"
            comp.ended_at = e.at
            self.open_comps.pop(e.step)
        elif e.final or e.retry_at is None:
            comp.outcome = f"failed: {e.error_type}"
            comp.ended_at = e.at


def build_timeline(entries: Sequence[JournalEntry]) -> SagaTimeline:
    """The timeline of one saga from its entries (in journal order; at least one)."""
    if not entries:
        raise ValueError("a timeline needs at least one journal entry")
    builder = _Builder(entries[0])
    for entry in entries:
        builder.entry(entry)
    t = builder.t
    if t.status == "running":
        t.status = "waiting" if builder.open_waits else "in flight"
    return t


def render_timeline(t: SagaTimeline) -> str:
    """The timeline as indented text."""
    lines = [
        f"saga {t.saga_id}  type {t.saga_type} v{t.saga_version}  status {t.status}"
        + (f" ({t.outcome_reason})" if t.outcome_reason else "")
    ]
    if t.partial:
        lines.append(f"  (history from seq {t.first_seq}: earlier entries are before --since)")
    if t.started_at is not None:
        span = f"  started {t.started_at.isoformat()}"
        if t.finished_at is not None:
            span += f", finished {t.finished_at.isoformat()} after {t.duration_s:.3f}s"
        lines.append(span)
    lines.append("  timeline:")
    for item in t.items:
        lines.append(
            f"    #{item.seq:<3} +{item.since_start_s:>10.3f}s (Δ{item.since_previous_s:.3f}s)"
            f"  {item.input}"
        )
        lines.extend(f"          → {event}" for event in item.events)
    if t.attempts:
        lines.append("  attempts:")
        for a in t.attempts:
            took = f" in {a.duration_s:.3f}s" if a.duration_s is not None else ""
            error = f" ({a.error})" if a.error else ""
            lines.append(f"    {a.step} #{a.attempt}: {a.outcome}{took}{error}")
    if t.approvals:
        lines.append("  approvals:")
        for w in t.approvals:
            who = f" by {w.by}" if w.by else ""
            waited = f" after {w.waited_s:.3f}s" if w.waited_s is not None else ""
            note = f" — {w.note}" if w.note else ""
            lines.append(f"    {w.name} ({w.kind}): {w.outcome}{who}{waited}{note}")
    if t.rejected_signals:
        lines.append("  signals refused:")
        lines.extend(f"    {s}" for s in t.rejected_signals)
    if t.compensations:
        lines.append("  compensations (in order):")
        for c in t.compensations:
            lines.append(f"    {c.step}: {c.outcome} after {c.attempts} attempt(s)")
    if any(t.usage.values()):
        lines.append("  usage: " + ", ".join(f"{k}={v}" for k, v in t.usage.items()))
    if t.ignored_inputs:
        lines.append(f"  ignored inputs (duplicates, stale, late): {t.ignored_inputs}")
    return "\n".join(lines)
