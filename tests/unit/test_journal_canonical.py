"""The journal's canonical form did not change: chains written before still verify.

``data/journals_v1.json`` holds journals written (and hashed) by the original
canonicalisation, a hand-written walk over ``model_dump`` feeding
``json.dumps``: the reference sagas' scenarios, a compensated saga and the
core benchmark's saga.  The canonical form now comes from the standard
library's C encoder with a ``default`` hook; these tests prove, entry by
entry, that it writes the same bytes, and that every frozen chain verifies.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from sagaline.orchestrator.bench.core import _one_saga
from sagaline.orchestrator.core.journal import (
    FLOAT_FIELDS,
    LATE_FIELDS,
    canonical_json,
    entry_hash,
    make_journal_entry,
    verify_chain,
)
from sagaline.schemas.base import Envelope
from sagaline.schemas.events import HeartbeatRecorded, StepCompleted
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.replies import StepHeartbeat

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).parent / "data" / "journals_v1.json"


def _legacy_plain(value: Any) -> Any:
    """The original hand-written walk (kept here as the reference)."""
    if isinstance(value, bytes):
        return {"$b64": base64.b64encode(value).decode()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _legacy_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_legacy_plain(v) for v in value]
    return value


def _without_late_fields(body: dict[str, Any], entry: JournalEntry) -> dict[str, Any]:
    """The fields the original walk saw: those added later are left out at their defaults."""
    records = [(body["input"], entry.input_type)] if body["input"] is not None else []
    records += [(event, event["event"]) for event in body["events"]]
    for record, type_name in records:
        for name, default in LATE_FIELDS.get(type_name or "", {}).items():
            if record.get(name, default) == default:
                record.pop(name, None)
    return body


def _legacy_canonical(entry: JournalEntry) -> bytes:
    dumped = entry.model_dump(mode="python", exclude={"hash"})
    body = _legacy_plain(_without_late_fields(dumped, entry))
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _corpus() -> dict[str, list[JournalEntry]]:
    raw = json.loads(CORPUS.read_text())
    return {
        name: [JournalEntry.model_validate_json(json.dumps(e)) for e in entries]
        for name, entries in raw.items()
    }


def test_frozen_journals_still_verify() -> None:
    corpus = _corpus()
    assert len(corpus) >= 8
    for name, entries in corpus.items():
        assert entries, name
        assert verify_chain(entries) == [], name


def test_canonical_bytes_equal_the_original_walk_on_the_corpus() -> None:
    checked = 0
    for entries in _corpus().values():
        for entry in entries:
            assert canonical_json(entry) == _legacy_canonical(entry)
            assert entry_hash(entry) == entry.hash
            checked += 1
    assert checked > 50


def test_canonical_bytes_equal_on_awkward_values() -> None:
    """Non-ASCII text, bytes payloads, microsecond-free and odd datetimes, floats."""
    at = datetime(2030, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    event = StepCompleted(
        at=at,
        step="schrödinger ✓",
        attempt=1,
        result=None,
        data=_payload(b'\x00\xff caf\xc3\xa9 "quoted" \\ \n'),
    )
    entry = make_journal_entry(
        None,
        None,
        [event],
        state_after=_state(at),
    )
    assert canonical_json(entry) == _legacy_canonical(entry)
    assert entry.hash == entry_hash(entry)
    assert verify_chain([entry]) == []


def _payload(data: bytes) -> Any:
    from sagaline.schemas.base import Payload

    return Payload(type_name="x.Y", data=data)


def _state(at: datetime) -> Any:
    from sagaline.schemas.state import SagaState

    return SagaState(
        saga_id="s-ü",
        saga_type="t",
        saga_version=1,
        data=_payload(b"{}"),
        started_at=at,
        updated_at=at,
        input_sha256="0" * 64,
    )


def test_built_entries_equal_validated_ones() -> None:
    """Entries are built without re-validation; they equal the validated record."""
    kit = _one_saga(3)
    assert len(kit.journal) == 4
    for entry in kit.journal:
        again = JournalEntry.model_validate(entry.model_dump())
        assert again == entry
        assert isinstance(again.envelope, Envelope)
        assert again.envelope.occurred_at.tzinfo is not None


@pytest.mark.parametrize("progress", [None, 0.0, 0.5, 1 / 3, 1e-05, 1e16, 1.2345678901234568e16])
def test_float_fields_are_written_as_pythons_json_writes_them(progress: float | None) -> None:
    at = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
    beat = StepHeartbeat(
        envelope=Envelope(message_id="m", saga_id="s-ü", saga_type="t", occurred_at=at),
        step="s1",
        attempt=1,
        task_id="s/s1/1/1",
        progress=progress,
    )
    event = HeartbeatRecorded(at=at, step="s1", attempt=1, progress=progress)
    entry = make_journal_entry(_state(at), beat, [event])
    assert canonical_json(entry) == _legacy_canonical(entry)


def _float_fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[tuple[str, str]]:
    if model in seen:
        return set()
    seen.add(model)
    found: set[tuple[str, str]] = set()
    for name, info in model.model_fields.items():
        stack: list[Any] = [info.annotation]
        while stack:
            tp = stack.pop()
            if tp is float:
                found.add((model.__name__, name))
            elif isinstance(tp, type) and issubclass(tp, BaseModel):
                found |= _float_fields(tp, seen)
            else:
                stack.extend(get_args(tp))
    return found


def test_every_float_field_of_an_entry_is_known() -> None:
    """A new float field must join FLOAT_FIELDS, or its hash would depend on orjson's spelling."""
    assert _float_fields(JournalEntry, set()) == set(FLOAT_FIELDS)
