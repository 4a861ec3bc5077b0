"""The audit's rules, pure: the invariants sagaline promises, checked over entries in memory.

Checks (names as they appear in reports):

``chain``
    each saga's entries have ``seq`` 1, 2, 3, … and each ``prev_hash`` is the
    previous entry's ``hash``, which is the SHA-256 of its content: an edited,
    dropped, reordered or injected entry breaks the chain.
``decode``
    every record on the journal topic decodes as a journal entry.
``dispatch``
    no step is dispatched again after it completed (per run of a loop), and
    nothing completes that was not dispatched.
``side_effects``
    no idempotency key completes twice, and one key never stands for two
    different step executions; with a database, the worker inbox holds no
    execution the journal did not dispatch and no key twice.
``compensation``
    the compensation plan is the completed compensable steps in reverse order
    of completion; each is compensated once, in that order, and only steps
    that completed; a compensated or cancelled saga compensated them all.
``terminal``
    at most one terminal status per saga, nothing decided after it (except
    recorded ignored inputs and refused signals).
``approval``
    no step is dispatched while an approval is open, a saga leaves an
    approval only through a recorded decision (approve/reject/timeout) that
    names who decided, and a tool call that needs approval runs only after it
    was approved.
:func:`audit_entries` audits sagas already read; :func:`audit_inbox` compares
worker inbox rows with the journal. Reading Kafka and PostgreSQL is
:mod:`sagaline.orchestrator.audit`'s job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sagaline.orchestrator.core.fork import fork_findings
from sagaline.orchestrator.core.journal import entry_hash, verify_chain
from sagaline.orchestrator.core.undecodable import Undecodable
from sagaline.schemas.events import (
    CompensationDispatched,
    CompensationStarted,
    InputIgnored,
    NodeEntered,
    SagaEvent,
    SagaFinished,
    SignalAccepted,
    SignalRejected,
    StepCompensated,
    StepCompleted,
    StepDispatched,
    StepSkipped,
    WaitOpened,
    WaitTimedOut,
)
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.payload import payload_sha256

__all__ = [
    "CHECKS",
    "AuditReport",
    "Finding",
    "InboxRow",
    "audit_entries",
    "audit_inbox",
    "audit_saga",
]

CHECKS: Mapping[str, str] = {
    "chain": "seq contiguous from 1, prev_hash links and content hashes intact",
    "decode": "every journal record decodes",
    "dispatch": "no step dispatched again after it completed",
    "side_effects": "no idempotency key completed (or executed by a worker) twice",
    "compensation": "completed compensable steps compensated once each, in reverse order",
    "terminal": "one terminal status per saga, nothing decided after it",
    "approval": "steps guarded by an approval dispatched only after it was granted",
    "fork": "a fork's input and copied history are its source's, up to the step it forked from",
}

#: events that may follow a terminal status (recorded, changing nothing)
_AFTER_END_OK = (InputIgnored, SignalRejected)


@dataclass(frozen=True)
class Finding:
    """One breached invariant."""

    check: str
    saga_id: str | None
    seq: int | None
    message: str

    def render(self) -> str:
        where = f"saga {self.saga_id}" if self.saga_id else "journal"
        if self.seq is not None:
            where += f" seq {self.seq}"
        return f"[{self.check}] {where}: {self.message}"


@dataclass(frozen=True)
class InboxRow:
    """One row of the worker inbox (``consumers/migrations/0001_worker_tables.sql``)."""

    idempotency_key: str
    saga_id: str
    kind: str
    step: str
    outcome: str | None


@dataclass
class AuditReport:
    """The outcome of an audit: what was read, which checks ran, what failed."""

    topic: str
    sagas: int = 0
    entries: int = 0
    findings: list[Finding] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    #: sagas whose history starts after seq 1 (``--since``): only the chain is checked
    partial: list[str] = field(default_factory=list)
    side_effects: int = 0
    compensations: int = 0
    #: worker inbox rows compared with the journal (None: no database given)
    inbox_rows: int | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        by_check = Counter(f.check for f in self.findings)
        return {
            "topic": self.topic,
            "ok": self.ok,
            "sagas": self.sagas,
            "entries": self.entries,
            "statuses": dict(sorted(self.statuses.items())),
            "side_effects_completed": self.side_effects,
            "compensations_completed": self.compensations,
            "inbox_rows_checked": self.inbox_rows,
            "partial_sagas": self.partial,
            "checks": {
                name: {"description": CHECKS[name], "failures": by_check.get(name, 0)}
                for name in CHECKS
            },
            "findings": [asdict(f) for f in self.findings],
        }

    def render(self) -> str:
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items())) or "none"
        lines = [
            f"audit of {self.topic}: {self.sagas} sagas, {self.entries} entries ({statuses})",
            f"  side effects completed: {self.side_effects}, compensations: {self.compensations}"
            + (
                f", worker inbox rows checked: {self.inbox_rows}"
                if self.inbox_rows is not None
                else ""
            ),
        ]
        by_check = Counter(f.check for f in self.findings)
        for name, description in CHECKS.items():
            mark = "FAIL" if by_check.get(name) else "ok  "
            lines.append(f"  {mark} {name:<13} {description}")
        if self.inbox_rows is None:
            lines.append("  (worker inbox not checked: no database URL given)")
        if self.partial:
            lines.append(
                f"  {len(self.partial)} saga(s) start before --since: only their chain was checked"
            )
        if self.findings:
            lines.append(f"{len(self.findings)} finding(s):")
            lines.extend(f"  {f.render()}" for f in self.findings)
        else:
            lines.append("audit passed: every invariant holds")
        return "\n".join(lines)


class _SagaAudit:
    """Walks one saga's events in order and records breaches."""

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        self.findings: list[Finding] = []
        self.seq = 0
        self.current: dict[str, tuple[int, str]] = {}  # step -> (run, key) of last dispatch
        self.compensable: dict[str, bool] = {}
        self.completed_runs: set[tuple[str, int]] = set()
        self.key_owner: dict[str, tuple[str, int]] = {}
        self.key_completions: Counter[str] = Counter()
        self.completed_order: list[str] = []  # compensable steps, by last completion
        self.compensating = False
        self.expected_order: list[str] = []
        self.late: set[str] = set()
        self.compensated: Counter[str] = Counter()
        self.finished: list[str] = []
        self.open_approvals: set[str] = set()
        self.tool_waits: dict[str, str] = {}  # wait name -> guarded tool step
        self.tool_pending: set[str] = set()
        self.tool_refused: set[str] = set()
        self.bound_views: dict[str, str] = {}  # bound approval -> sha256 of the shown view

    def fail(self, check: str, message: str) -> None:
        self.findings.append(Finding(check, self.saga_id, self.seq, message))

    def entry(self, entry: JournalEntry) -> None:
        self.seq = entry.seq
        resolved: set[str] = set()
        for event in entry.events:
            if self.finished and not isinstance(event, _AFTER_END_OK):
                self.fail(
                    "terminal",
                    f"{event.event} decided after the terminal status {self.finished[0]}",
                )
            self.event(event, resolved)

    def event(self, e: SagaEvent, resolved: set[str]) -> None:
        if isinstance(e, StepDispatched):
            self.dispatched(e)
        elif isinstance(e, StepCompleted):
            self.completed(e.step)
        elif isinstance(e, StepSkipped):
            run, _ = self.current.get(e.step, (0, ""))
            self.completed_runs.add((e.step, run))
        elif isinstance(e, CompensationStarted):
            self.compensation_started(e)
        elif isinstance(e, CompensationDispatched):
            if e.step not in self.completed_order:
                self.fail("compensation", f"compensation of {e.step}, which never completed")
            elif self.compensated[e.step]:
                self.fail("compensation", f"compensation of {e.step} dispatched after it succeeded")
        elif isinstance(e, StepCompensated):
            self.step_compensated(e.step)
        elif isinstance(e, SagaFinished):
            self.saga_finished(e)
        elif isinstance(e, WaitOpened):
            self.wait_opened(e)
        elif isinstance(e, SignalAccepted):
            self.signal_accepted(e, resolved)
        elif isinstance(e, WaitTimedOut):
            self.wait_timed_out(e, resolved)
        elif isinstance(e, NodeEntered):
            self.node_entered(e, resolved)

    def wait_opened(self, e: WaitOpened) -> None:
        if e.kind == "approval":
            self.open_approvals.add(e.name)
        if e.bound:
            self.bound_opened(e)
        elif e.kind == "tool_approval" and e.tool_step is not None:
            self.tool_waits[e.name] = e.tool_step
            self.tool_pending.add(e.tool_step)

    def wait_timed_out(self, e: WaitTimedOut, resolved: set[str]) -> None:
        self.open_approvals.discard(e.name)
        resolved.add(e.name)
        tool_step = self.tool_waits.pop(e.name, None)
        if tool_step is not None:
            self.tool_pending.discard(tool_step)
            self.tool_refused.add(tool_step)

    def node_entered(self, e: NodeEntered, resolved: set[str]) -> None:
        if e.previous is None or e.previous not in self.open_approvals:
            return
        if e.previous not in resolved:
            self.fail(
                "approval",
                f"left approval {e.previous} for {e.node} without a recorded decision",
            )
        self.open_approvals.discard(e.previous)

    def dispatched(self, e: StepDispatched) -> None:
        if (e.step, e.run) in self.completed_runs:
            self.fail(
                "dispatch",
                f"{e.step} (run {e.run}) dispatched again (attempt {e.attempt}) after it completed",
            )
        owner = self.key_owner.setdefault(e.idempotency_key, (e.step, e.run))
        if owner != (e.step, e.run):
            self.fail(
                "side_effects",
                f"idempotency key {e.idempotency_key} of {owner[0]} (run {owner[1]}) reused for "
                f"{e.step} (run {e.run})",
            )
        for wait in sorted(self.open_approvals):
            self.fail("approval", f"{e.step} dispatched while approval {wait} is still open")
        if e.step in self.tool_pending:
            self.fail("approval", f"tool call {e.step} dispatched before it was approved")
        elif e.step in self.tool_refused:
            self.fail("approval", f"tool call {e.step} dispatched although it was not approved")
        self.current[e.step] = (e.run, e.idempotency_key)
        self.compensable[e.step] = e.compensable

    def completed(self, step: str) -> None:
        current = self.current.get(step)
        if current is None:
            self.fail("dispatch", f"{step} completed but was never dispatched")
            return
        run, key = current
        self.key_completions[key] += 1
        if (step, run) in self.completed_runs or self.key_completions[key] > 1:
            self.fail(
                "side_effects",
                f"{step} (run {run}) completed twice: idempotency key {key} took effect "
                f"{self.key_completions[key]} times",
            )
        self.completed_runs.add((step, run))
        if self.compensable.get(step, False):
            if step in self.completed_order:
                self.completed_order.remove(step)
            self.completed_order.append(step)
            if self.compensating:
                self.late.add(step)

    def compensation_started(self, e: CompensationStarted) -> None:
        self.open_approvals.clear()
        expected = [s for s in reversed(self.completed_order) if not self.compensated[s]]
        if self.compensating:
            return  # a second start (a cancel while compensating) does not re-plan
        self.compensating = True
        self.expected_order = expected
        if list(e.steps) != expected:
            self.fail(
                "compensation",
                f"compensation plan {list(e.steps)} is not the completed compensable steps in "
                f"reverse order of completion {expected}",
            )

    def step_compensated(self, step: str) -> None:
        self.compensated[step] += 1
        if step not in self.completed_order:
            self.fail("compensation", f"{step} compensated but it never completed")
            return
        if self.compensated[step] > 1:
            self.fail("compensation", f"{step} compensated {self.compensated[step]} times")
            return
        if step in self.late:
            return  # completed while compensating: undone whenever it lands
        remaining = [s for s in self.expected_order if not self.compensated[s] or s == step]
        if remaining and remaining[0] != step:
            self.fail(
                "compensation",
                f"{step} compensated before {remaining[0]} (reverse order of completion "
                f"requires {remaining[0]} first)",
            )

    def saga_finished(self, e: SagaFinished) -> None:
        self.finished.append(e.status)
        self.open_approvals.clear()
        if len(self.finished) > 1:
            self.fail("terminal", f"terminal status {len(self.finished)}: {self.finished}")
            return
        missing = [s for s in self.completed_order if not self.compensated[s]]
        if e.status in ("compensated", "cancelled") and missing:
            self.fail(
                "compensation", f"saga {e.status} but completed steps {missing} were not undone"
            )
        if e.status == "completed" and +self.compensated:
            self.fail(
                "compensation",
                f"saga completed although {sorted(self.compensated)} were compensated",
            )

    def bound_opened(self, e: WaitOpened) -> None:
        if e.shown_sha256 is None:
            self.fail("approval", f"bound approval {e.name} opened without the hash of its view")
            return
        if e.shown is not None and payload_sha256(e.shown) != e.shown_sha256:
            self.fail("approval", f"approval {e.name}: the view shown does not match its hash")
        self.bound_views[e.name] = e.shown_sha256

    def bound_granted(self, e: SignalAccepted) -> None:
        shown = self.bound_views.pop(e.name, None)
        if shown is None or not e.approved:
            return
        if e.seen_sha256 != shown:
            seen = (e.seen_sha256 or "nothing")[:12]
            self.fail(
                "approval",
                f"approval {e.name} granted on {seen}, not on the view shown ({shown[:12]})",
            )

    def signal_accepted(self, e: SignalAccepted, resolved: set[str]) -> None:
        resolved.add(e.name)
        self.bound_granted(e)
        if e.name in self.open_approvals:
            self.open_approvals.discard(e.name)
            if e.approved is None:
                self.fail("approval", f"approval {e.name} resolved without approve or reject")
        if not e.by.strip():
            self.fail("approval", f"signal {e.name} accepted without the identity of who sent it")
        tool_step = self.tool_waits.pop(e.name, None)
        if tool_step is not None:
            self.tool_pending.discard(tool_step)
            if not e.approved:
                self.tool_refused.add(tool_step)


def _anchored_chain(entries: Sequence[JournalEntry]) -> list[str]:
    """Chain problems of a history that starts after seq 1 (links only from its start)."""
    problems: list[str] = []
    prev: JournalEntry | None = None
    for entry in entries:
        if prev is not None:
            if entry.seq != prev.seq + 1:
                problems.append(f"seq {entry.seq}: expected seq {prev.seq + 1}")
            if entry.prev_hash != prev.hash:
                problems.append(f"seq {entry.seq}: prev_hash does not match the previous entry")
        if entry_hash(entry) != entry.hash:
            problems.append(f"seq {entry.seq}: hash does not match its content")
        prev = entry
    return problems


def _seq_of(problem: str) -> int | None:
    head = problem.split(":", 1)[0]
    if head.startswith("seq "):
        try:
            return int(head[4:])
        except ValueError:
            return None
    return None


def audit_saga(entries: Sequence[JournalEntry], *, partial: bool = False) -> list[Finding]:
    """Findings of one saga's entries (journal order); ``partial``: history starts late."""
    if not entries:
        return []
    saga_id = entries[0].envelope.saga_id
    problems = _anchored_chain(entries) if partial else verify_chain(entries)
    findings = [Finding("chain", saga_id, _seq_of(p), p) for p in problems]
    if partial:
        return findings
    walker = _SagaAudit(saga_id)
    for entry in entries:
        walker.entry(entry)
    return findings + walker.findings


def _status(entries: Sequence[JournalEntry]) -> str:
    for entry in reversed(entries):
        for event in reversed(entry.events):
            if isinstance(event, SagaFinished):
                return event.status
    return "in flight"


def audit_entries(
    by_saga: Mapping[str, Sequence[JournalEntry]],
    *,
    topic: str = "",
    undecodable: Iterable[Undecodable] = (),
    since: datetime | None = None,
) -> AuditReport:
    """Audit sagas already read (``since``: histories may start after seq 1)."""
    report = AuditReport(topic=topic)
    for bad in undecodable:
        report.findings.append(
            Finding(
                "decode",
                bad.key,
                None,
                f"record at {topic}[{bad.partition}]@{bad.offset} is not a journal entry: "
                f"{bad.error}",
            )
        )
    statuses: Counter[str] = Counter()
    for saga_id in sorted(by_saga):
        entries = by_saga[saga_id]
        if not entries:
            continue
        partial = since is not None and entries[0].seq != 1
        if partial:
            report.partial.append(saga_id)
        report.sagas += 1
        report.entries += len(entries)
        statuses[_status(entries)] += 1
        report.findings.extend(audit_saga(entries, partial=partial))
        if not partial and since is None:
            report.findings.extend(
                Finding("fork", saga_id, 1, p) for p in fork_findings(saga_id, entries, by_saga)
            )
        for entry in entries:
            for event in entry.events:
                if isinstance(event, StepCompleted):
                    report.side_effects += 1
                elif isinstance(event, StepCompensated):
                    report.compensations += 1
    report.statuses = dict(statuses)
    return report


@dataclass
class _Keys:
    """What one saga's journal says about its idempotency keys."""

    dispatched: set[str] = field(default_factory=set)
    recorded: set[str] = field(default_factory=set)  # completions and compensations
    final: str | None = None


def _keys_of(entries: Sequence[JournalEntry]) -> _Keys:
    keys = _Keys()
    step_key: dict[str, str] = {}
    undo_key: dict[str, str] = {}
    for entry in entries:
        for event in entry.events:
            if isinstance(event, StepDispatched):
                keys.dispatched.add(event.idempotency_key)
                step_key[event.step] = event.idempotency_key
            elif isinstance(event, CompensationDispatched):
                keys.dispatched.add(event.idempotency_key)
                undo_key[event.step] = event.idempotency_key
            elif isinstance(event, StepCompleted) and event.step in step_key:
                keys.recorded.add(step_key[event.step])
            elif isinstance(event, StepCompensated) and event.step in undo_key:
                keys.recorded.add(undo_key[event.step])
            elif isinstance(event, SagaFinished):
                keys.final = event.status
    return keys


def audit_inbox(
    rows: Iterable[InboxRow], by_saga: Mapping[str, Sequence[JournalEntry]]
) -> list[Finding]:
    """Worker-side findings: executions the journal never dispatched, keys executed
    twice, and effects that succeeded in the worker but were never recorded by a
    saga that has ended (so they were never undone either).

    Only rows of sagas present in ``by_saga`` are judged (the inbox may serve
    several journals).
    """
    ledger = {saga_id: _keys_of(entries) for saga_id, entries in by_saga.items()}
    findings: list[Finding] = []
    seen: Counter[str] = Counter()

    def fail(row: InboxRow, message: str) -> None:
        findings.append(Finding("side_effects", row.saga_id, None, message))

    for row in rows:
        keys = ledger.get(row.saga_id)
        if keys is None:
            continue
        what = f"{row.kind} {row.step} (key {row.idempotency_key})"
        seen[row.idempotency_key] += 1
        if seen[row.idempotency_key] == 2:
            fail(row, f"worker inbox executed {what} more than once")
        if row.idempotency_key not in keys.dispatched:
            fail(row, f"worker inbox executed {what}, which the journal never dispatched")
        elif (
            row.outcome == "succeeded"
            and keys.final is not None
            and row.idempotency_key not in keys.recorded
        ):
            fail(
                row,
                f"worker executed {what} but the saga ended {keys.final} without recording "
                "it: the effect was never accounted for or undone",
            )
    return findings
