"""The storm's invariants, checked at the end from the journal, the state topic and
the database (every count must be zero except the ``*_ok`` / totals).

* nothing lost or stuck: every saga has a terminal snapshot with the outcome it
  asked for (``completed``, or ``compensated`` when ``charge`` fails), and the
  snapshot is the fold of its journal;
* each effect exactly once: one ``reserve`` row, one ``charge`` row unless it
  failed, one ``release`` row when compensated (PostgreSQL path); one
  ``StepCompleted`` per step in the journal (both paths); no effect row of a
  saga the storm did not start;
* no completed step re-run: no execution started after its completion was journaled;
* every compensation once, in reverse order: ``recall`` then ``release``;
* every bad input dead-lettered with a reason (matched by source
  topic/partition/offset) or journaled as ignored (matched by message id);
  the broker may refuse only records above the size limit, uncompressed;
* no process exited except when killed; the audit (``sagaline audit`` rules,
  worker inbox included) is clean.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from sagaline.orchestrator.audit import audit_entries, audit_inbox, read_inbox
from sagaline.orchestrator.chaos.flood import BadInput
from sagaline.orchestrator.chaos.reading import read_topic
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.core.journal import fold_journal
from sagaline.orchestrator.runtime.journal_reader import JournalRead, JournalRecord, read_journal
from sagaline.schemas.codec import RecordCodec
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.errors import SchemaError
from sagaline.schemas.events import InputIgnored, SignalRejected, StepCompensated, StepCompleted
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.state import SagaState

__all__ = ["ZERO", "Expected", "check_invariants"]

_REVERSE = ["notify", "reserve"]
_BROKER_MAY_REFUSE = {"above_size_limit"}


@dataclass(frozen=True)
class Expected:
    """What the storm started: saga id -> whether ``charge`` fails."""

    fails: Mapping[str, bool]
    bad_inputs: Sequence[BadInput] = ()
    unexpected_exits: Sequence[str] = ()
    stop_codes: Mapping[str, int | None] = field(default_factory=dict)


def _states(bootstrap: str, topic: str, codec: RecordCodec) -> dict[str, SagaState]:
    states: dict[str, SagaState] = {}
    for rec in read_topic(bootstrap, topic):
        key = (rec.key or b"").decode(errors="replace")
        if rec.value is None:
            states.pop(key, None)
            continue
        state = codec.decode(rec.value, (SagaState,))
        assert isinstance(state, SagaState)
        states[key] = state
    return states


def _saga_checks(
    expected: Expected, states: Mapping[str, SagaState], journal: Mapping[str, list[JournalEntry]]
) -> dict[str, Any]:
    lost: list[str] = []
    stuck: list[str] = []
    wrong: list[str] = []
    mismatch: list[str] = []
    twice: list[str] = []
    order: list[str] = []
    statuses: Counter[str] = Counter()
    for saga_id, fails in expected.fails.items():
        state = states.get(saga_id)
        if state is None:
            lost.append(saga_id)
            continue
        statuses[state.status] += 1
        if not state.is_terminal:
            stuck.append(saga_id)
            continue
        if state.status != ("compensated" if fails else "completed"):
            wrong.append(f"{saga_id}:{state.status}")
        entries = journal.get(saga_id, [])
        if fold_journal(entries) != state:
            mismatch.append(saga_id)
        events = [e for entry in entries for e in entry.events]
        done = Counter(e.step for e in events if isinstance(e, StepCompleted))
        twice.extend(f"{saga_id}/{s}" for s, n in done.items() if n > 1)
        undone = [e.step for e in events if isinstance(e, StepCompensated)]
        if undone != (_REVERSE if fails else []):
            order.append(f"{saga_id}:{undone}")
    return {
        "statuses": dict(statuses),
        "lost": len(lost),
        "stuck": len(stuck),
        "wrong_outcome": len(wrong),
        "state_differs_from_journal": len(mismatch),
        "steps_completed_twice": len(twice),
        "compensations_not_once_in_reverse_order": len(order),
        "examples": (lost + stuck + wrong + mismatch + twice + order)[:10],
    }


def _completion_times(records: Sequence[JournalRecord]) -> dict[tuple[str, str, str], datetime]:
    """When each step's (or compensation's) completion was journaled: the journal
    record's timestamp, taken when the orchestrator wrote it - after the worker
    committed (the event's own ``at`` is the reply's time, taken by the worker)."""
    out: dict[tuple[str, str, str], datetime] = {}
    for rec in records:
        when = datetime.fromtimestamp(rec.timestamp_ms / 1000, tz=UTC)
        saga_id = rec.entry.envelope.saga_id
        for e in rec.entry.events:
            if isinstance(e, StepCompleted):
                out.setdefault((saga_id, e.step, "step"), when)
            elif isinstance(e, StepCompensated):
                out.setdefault((saga_id, e.step, "compensate"), when)
    return out


def _db_checks(
    dsn: str, schema: str, expected: Expected, records: Sequence[JournalRecord]
) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        effects = conn.execute(f"SELECT saga_id, step, kind FROM {schema}.storm_effects").fetchall()
        attempts = conn.execute(
            f"SELECT saga_id, step, kind, at FROM {schema}.storm_attempts"
        ).fetchall()
    rows = Counter((str(s), str(st), str(k)) for s, st, k in effects)
    wanted: Counter[tuple[str, str, str]] = Counter()
    for saga_id, fails in expected.fails.items():
        wanted[(saga_id, "reserve", "step")] = 1
        if fails:
            wanted[(saga_id, "reserve", "compensate")] = 1
        else:
            wanted[(saga_id, "charge", "step")] = 1
    duplicates = sum(max(0, n - wanted[k]) for k, n in rows.items() if k[0] in expected.fails)
    missing = sum(max(0, n - rows[k]) for k, n in wanted.items())
    foreign = sum(n for k, n in rows.items() if k[0] not in expected.fails)
    done = _completion_times(records)
    rerun = [
        f"{s}/{st}/{k} started {at.isoformat()}, completion journaled {when.isoformat()}"
        for s, st, k, at in attempts
        if (when := done.get((str(s), str(st), str(k)))) is not None and at > when
    ]
    return {
        "effect_rows": len(effects),
        "executions": len(attempts),
        "duplicate_effects": duplicates,
        "missing_effects": missing,
        "effects_of_unknown_sagas": foreign,
        "completed_steps_rerun": len(rerun),
        "completed_steps_rerun_examples": rerun[:5],
    }


def _ignored_ids(journal: Mapping[str, list[JournalEntry]]) -> Counter[str]:
    ids: Counter[str] = Counter()
    for entries in journal.values():
        for entry in entries:
            envelope = getattr(entry.input, "envelope", None)
            if envelope is None:
                continue
            if any(isinstance(e, InputIgnored | SignalRejected) for e in entry.events):
                ids[envelope.message_id] += 1
    return ids


def _bad_input_checks(
    bootstrap: str,
    topics: TopicNames,
    codec: RecordCodec,
    expected: Expected,
    journal: Mapping[str, list[JournalEntry]],
) -> dict[str, Any]:
    letters: dict[tuple[str, int, int], str] = {}  # where the bad input was -> error type
    no_reason = 0
    for rec in read_topic(bootstrap, topics.deadletter):
        try:
            letter = codec.decode(rec.value or b"", (DeadLetter,))
        except SchemaError:
            no_reason += 1
            continue
        assert isinstance(letter, DeadLetter)
        if not letter.reason.strip():
            no_reason += 1
        where = (letter.source_topic, letter.source_partition, letter.source_offset)
        letters[where] = letter.error_type
    ignored = _ignored_ids(journal)
    kinds: Counter[str] = Counter()
    outcome: Counter[str] = Counter()
    unaccounted: list[str] = []
    error_types: dict[str, set[str]] = {}
    for bad in expected.bad_inputs:
        kinds[bad.kind] += 1
        if bad.refused is not None:
            outcome["refused_by_broker"] += 1
            if bad.kind not in _BROKER_MAY_REFUSE:
                unaccounted.append(f"{bad.kind} refused: {bad.refused}")
        elif (bad.topic, bad.partition, bad.offset) in letters:
            outcome["dead_lettered"] += 1
            error_types.setdefault(bad.kind, set()).add(
                letters[bad.topic, bad.partition, bad.offset]
            )
        elif bad.message_id is not None and ignored[bad.message_id] > 0:
            ignored[bad.message_id] -= 1
            outcome["journaled_ignored"] += 1
        else:
            unaccounted.append(f"{bad.kind} at {bad.topic}[{bad.partition}]@{bad.offset}")
    return {
        "bad_inputs": len(expected.bad_inputs),
        "bad_input_kinds": dict(kinds),
        #: the dead letters' error types, per kind of bad input
        "dead_letter_error_types": {k: sorted(v) for k, v in sorted(error_types.items())},
        **{k: outcome[k] for k in ("dead_lettered", "journaled_ignored", "refused_by_broker")},
        "dead_letters_without_reason": no_reason,
        "bad_inputs_unaccounted": len(unaccounted),
        "bad_input_examples": unaccounted[:10],
    }


def check_invariants(
    bootstrap: str,
    topics: TopicNames,
    dsn: str,
    schema: str,
    codec: RecordCodec,
    expected: Expected,
    read: JournalRead | None = None,
) -> dict[str, Any]:
    """Every invariant's count (see the module docstring); ``read``: the journal, when
    the caller read it already."""
    if read is None:
        read = read_journal(bootstrap, topics.journal, codec=codec, timeout=600.0)
    journal = read.by_saga()
    states = _states(bootstrap, topics.state, codec)
    report = audit_entries(journal, topic=topics.journal, undecodable=read.undecodable)
    report.findings.extend(audit_inbox(read_inbox(dsn, schema, journal), journal))
    bad_exit = {k: v for k, v in expected.stop_codes.items() if v != 0}
    return {
        "sagas": len(expected.fails),
        **_saga_checks(expected, states, journal),
        **_db_checks(dsn, schema, expected, read.records),
        **_bad_input_checks(bootstrap, topics, codec, expected, journal),
        "unexpected_exits": len(expected.unexpected_exits),
        "unexpected_exit_examples": [line[:400] for line in expected.unexpected_exits[:3]],
        "unclean_stops": len(bad_exit),
        "unclean_stop_examples": [f"{k} exited {v}" for k, v in sorted(bad_exit.items())][:5],
        "audit_findings": len(report.findings),
        "audit_examples": [f.render() for f in report.findings[:5]],
    }


def steps_completed_per_s(
    read: JournalRead, windows: Mapping[str, tuple[datetime, datetime]]
) -> dict[str, float]:
    """Steps completed per second (``StepCompleted`` events by their time) in each named
    window: the work done, which a saga count misses while every saga is mid-way."""
    times = [
        event.at
        for record in read.records
        for event in record.entry.events
        if isinstance(event, StepCompleted)
    ]
    rates = {}
    for name, (start, end) in windows.items():
        seconds = (end - start).total_seconds()
        count = sum(1 for at in times if start <= at < end)
        rates[name] = round(count / seconds, 1) if seconds > 0 else 0.0
    return rates


#: The counts that must be zero for the storm to pass.
ZERO = (
    "lost",
    "stuck",
    "wrong_outcome",
    "state_differs_from_journal",
    "steps_completed_twice",
    "compensations_not_once_in_reverse_order",
    "duplicate_effects",
    "missing_effects",
    "effects_of_unknown_sagas",
    "completed_steps_rerun",
    "dead_letters_without_reason",
    "bad_inputs_unaccounted",
    "unexpected_exits",
    "unclean_stops",
    "audit_findings",
)
