"""The hash-chained journal: build entries, verify chains, fold them back.

``hash = sha256(prev_hash + canonical JSON of the entry without "hash")``.
The canonical JSON is the pydantic model dumped with sorted keys, bytes as
``{"$b64": base64}`` and datetimes in ISO 8601 (UTC), compact separators,
UTF-8 (not ASCII-escaped): it does not depend on the Avro codec.  orjson
writes it (sorted keys; bytes through its ``default`` hook; the few float
fields pre-written as Python's ``json`` writes them, since orjson spells
``1e-05`` as ``0.00001``): the same bytes as the original hand-written walk
over ``json.dumps``, which ``tests/unit/test_journal_canonical.py`` proves on
journals frozen before the change, so every existing chain still verifies.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from pydantic import BaseModel

from sagaline.orchestrator.core.decider import Decision, Input, derive_message_id
from sagaline.orchestrator.core.errors import JournalError
from sagaline.orchestrator.core.fold import fold
from sagaline.schemas.base import Envelope
from sagaline.schemas.events import SagaEvent
from sagaline.schemas.journal import GENESIS_HASH, JournalEntry
from sagaline.schemas.state import SagaState
from sagaline.schemas.trusted import construct, replace

__all__ = [
    "FLOAT_FIELDS",
    "canonical_json",
    "entry_hash",
    "fold_journal",
    "make_journal_entry",
    "record_decision",
    "verify_chain",
]


def _bytes_as_b64(value: Any) -> Any:
    """What the encoder writes for the one non-JSON type an entry holds."""
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode()}
    raise TypeError(f"{type(value).__name__} has no canonical JSON form")


def _python_float(value: float | None) -> Any:
    """A float as Python's ``json`` writes it (orjson writes ``1e-5``, json ``1e-05``)."""
    return value if value is None else orjson.Fragment(json.dumps(value).encode())


#: the float fields an entry can hold (``tests/unit/test_journal_canonical.py``
#: checks this against every record a journal entry may contain)
FLOAT_FIELDS: frozenset[tuple[str, str]] = frozenset(
    {("StepHeartbeat", "progress"), ("HeartbeatRecorded", "progress")}
)
#: optional fields added to records after journals were first written: left out
#: of the canonical JSON while they hold their default, so every chain written
#: before them still verifies (``tests/unit/test_journal_canonical.py``)
LATE_FIELDS: dict[str, dict[str, Any]] = {
    "StartSaga": {"fork": None},
    "SignalSaga": {"seen_sha256": None},
    "WaitOpened": {"shown": None, "shown_sha256": None, "bound": False},
    "SignalAccepted": {"seen_sha256": None},
    "AgentTurnStarted": {"model": None},
    "AgentTurnRecorded": {"model": None, "attempt": None, "usage": None},
}


_FLOAT_RECORDS: frozenset[str] = frozenset(record for record, _ in FLOAT_FIELDS)


def _plain(value: Any) -> Any:
    """What the encoder writes for the values JSON lacks: a record is its fields (what
    ``model_dump`` would give: every field holds a JSON type, a datetime, bytes or a
    record), bytes are ``{"$b64": base64}``."""
    if isinstance(value, BaseModel):
        return value.__dict__
    return _bytes_as_b64(value)


def _top(record: BaseModel, type_name: str | None) -> dict[str, Any]:
    """The fields of the entry's input or of one of its events, as hashed: late fields
    left out at their defaults, float fields pre-written."""
    fields = record.__dict__
    late = LATE_FIELDS.get(type_name or "")
    floats = type(record).__name__ in _FLOAT_RECORDS
    if not late and not floats:
        return fields  # orjson only reads it
    fields = dict(fields)
    for name, default in (late or {}).items():
        if name in fields and fields[name] == default:
            del fields[name]
    if floats:
        fields["progress"] = _python_float(fields["progress"])
    return fields


def canonical_json(entry: JournalEntry) -> bytes:
    """The canonical bytes of ``entry`` without its ``hash`` field.

    Written from the records' fields directly (the bytes ``model_dump`` + orjson
    gave: ``tests/unit/test_journal_canonical.py`` checks them on frozen journals)."""
    body = {name: value for name, value in entry.__dict__.items() if name != "hash"}
    if entry.input is not None:
        body["input"] = _top(entry.input, entry.input_type)
    body["events"] = [_top(event, event.__dict__.get("event")) for event in entry.events]
    return orjson.dumps(body, default=_plain, option=orjson.OPT_SORT_KEYS)


def entry_hash(entry: JournalEntry) -> str:
    """``sha256(prev_hash + canonical_json(entry))`` as hex."""
    return hashlib.sha256(entry.prev_hash.encode() + canonical_json(entry)).hexdigest()


def make_journal_entry(
    state_before: SagaState | None,
    input: Input | None,
    events: Sequence[SagaEvent],
    *,
    state_after: SagaState | None = None,
) -> JournalEntry:
    """The journal entry recording ``input`` and the ``events`` decided from it.

    ``seq`` and ``prev_hash`` continue ``state_before``'s chain (a new saga
    starts at seq 1 after :data:`GENESIS_HASH`).
    """
    reference = state_before or state_after
    if reference is None:
        raise JournalError("a journal entry needs the saga state before or after the input")
    seq = (state_before.journal_seq if state_before else 0) + 1
    prev = state_before.journal_hash if state_before and state_before.journal_hash else GENESIS_HASH
    cause = input.envelope if input is not None else None
    # every value below comes from validated records (the input, the states and
    # the decided events), so the entry is built without validating it again
    envelope = construct(
        Envelope,
        {
            "message_id": derive_message_id(reference.saga_id, "journal", seq),
            "saga_id": reference.saga_id,
            "saga_type": reference.saga_type,
            "saga_version": reference.saga_version,
            "occurred_at": cause.occurred_at if cause else reference.updated_at,
            "causation_id": cause.message_id if cause else None,
            "correlation_id": (cause.correlation_id if cause else None) or reference.saga_id,
            "trace": dict(cause.trace) if cause else {},
        },
    )
    fields: dict[str, Any] = {
        "envelope": envelope,
        "seq": seq,
        "input_type": type(input).__name__ if input is not None else None,
        "input": input,
        "events": list(events),
        "prev_hash": prev,
        "hash": "",
    }
    unhashed = construct(JournalEntry, fields)
    return replace(unhashed, {"hash": entry_hash(unhashed)})


def record_decision(
    state_before: SagaState | None, input: Input, decision: Decision
) -> tuple[JournalEntry | None, SagaState | None]:
    """The journal entry of ``decision`` and the state stamped with its seq and hash.

    Returns ``(None, state_before)`` when the decision has no events (a
    rejected input): nothing is journaled.
    """
    if not decision.events or decision.state is None:
        return None, state_before
    entry = make_journal_entry(state_before, input, decision.events, state_after=decision.state)
    stamped = replace(decision.state, {"journal_seq": entry.seq, "journal_hash": entry.hash})
    return entry, stamped


def verify_chain(entries: Iterable[JournalEntry]) -> list[str]:
    """Problems in one saga's chain (empty when sound): gaps, broken links, bad hashes."""
    problems: list[str] = []
    prev_hash = GENESIS_HASH
    expected_seq = 1
    saga_id: str | None = None
    for entry in entries:
        if saga_id is None:
            saga_id = entry.envelope.saga_id
        elif entry.envelope.saga_id != saga_id:
            problems.append(f"seq {entry.seq}: belongs to saga {entry.envelope.saga_id}")
        if entry.seq != expected_seq:
            problems.append(f"seq {entry.seq}: expected seq {expected_seq}")
        if entry.prev_hash != prev_hash:
            problems.append(f"seq {entry.seq}: prev_hash does not match the previous entry")
        if entry_hash(entry) != entry.hash:
            problems.append(f"seq {entry.seq}: hash does not match its content")
        prev_hash = entry.hash
        expected_seq = entry.seq + 1
    return problems


def fold_journal(entries: Iterable[JournalEntry]) -> SagaState | None:
    """Rebuild the state snapshot from journal entries (events folded, seq and hash stamped)."""
    state: SagaState | None = None
    for entry in entries:
        state = fold(entry.events, state)
        if state is not None:
            state = replace(state, {"journal_seq": entry.seq, "journal_hash": entry.hash})
    return state
