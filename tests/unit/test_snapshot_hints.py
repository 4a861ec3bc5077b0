"""Snapshot hints and restore at first use (``orchestrator/runtime/snapshots.py``).

The orchestrator writes hints beside every active snapshot; restore keeps such a
snapshot unread (``LazySnapshot``) and the engine loads it when the saga is first
needed.  Here without Kafka: the hints a real saga state gives, what restore makes of
headers it finds, and ``PartitionState.state`` loading an unread saga once.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Message

from sagaline.orchestrator.runtime.batch import PartitionState
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.signing_runtime import reset_signing, signer_for
from sagaline.orchestrator.runtime.snapshots import (
    APPROVALS_HEADER,
    DUE_HEADER,
    TERMINAL_HEADER,
    TYPE_HEADER,
    LazySnapshot,
    Unverified,
    approvals_by_type,
    lazy_snapshot,
    load_snapshot,
    snapshot_headers,
)
from sagaline.schemas.base import Record
from sagaline.schemas.payload import payload_sha256, to_payload
from sagaline.schemas.state import SagaState, Timer, WaitState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from orchestrator_sagas import REGISTRY, Approved, PipeData

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LOGIC = CoreLogic(REGISTRY)


def _parked(saga_id: str = "s-1") -> SagaState:
    data = to_payload(PipeData(label="x"))
    return SagaState(
        saga_id=saga_id,
        saga_type=Approved.type_name,
        saga_version=Approved.version,
        data=data,
        input_sha256=payload_sha256(data),
        started_at=NOW,
        updated_at=NOW,
        status="waiting",
        waits=[WaitState(name="manager_ok", kind="approval", opened_at=NOW)],
        timers=[
            Timer(timer_id="late", kind="wait_timeout", due_at=NOW + timedelta(days=2)),
            Timer(timer_id="soon", kind="wait_timeout", due_at=NOW + timedelta(hours=1)),
        ],
    )


def _message(
    state: SagaState, headers: list[tuple[str, bytes]] | None, *, signed: bool = True
) -> Message:
    """The snapshot as restore reads it (signed as the orchestrator when signing is on)."""
    key, value = state.saga_id.encode(), AvroCodec().encode(state)
    signer = signer_for("orchestrator") if signed else None
    if signer is not None:
        headers = [*(headers or []), *signer.headers("t.state", key, value)]
    return Message(topic="t.state", partition=0, offset=7, key=key, value=value, headers=headers)


def _headers(state: Record) -> list[tuple[str, bytes]]:
    out = []
    for name, value in snapshot_headers(LOGIC, state):
        assert isinstance(value, bytes)
        out.append((name, value))
    return out


def test_an_active_snapshot_carries_its_earliest_timer_type_and_open_approvals() -> None:
    state = _parked()
    headers = dict(_headers(state))
    assert headers[TERMINAL_HEADER] == b"false"
    assert headers[DUE_HEADER] == str(int((NOW + timedelta(hours=1)).timestamp() * 1000)).encode()
    assert headers[TYPE_HEADER] == Approved.type_name.encode()
    assert headers[APPROVALS_HEADER] == b"1"
    lazy = lazy_snapshot(_message(state, _headers(state)))
    assert lazy is not None
    assert lazy.due == (NOW + timedelta(hours=1)).timestamp()
    assert (lazy.saga_type, lazy.approvals) == (Approved.type_name, 1)


def test_a_saga_without_timers_has_no_due_time() -> None:
    state = _parked().model_copy(update={"timers": []})
    lazy = lazy_snapshot(_message(state, _headers(state)))
    assert lazy is not None and lazy.due is None


@pytest.mark.parametrize(
    "headers",
    [
        None,  # written before the hints
        [(TERMINAL_HEADER, b"false")],  # hints missing
        [(TERMINAL_HEADER, b"true")],  # terminal: restore loads it (its tombstone timer)
        [
            (TERMINAL_HEADER, b"false"),
            (DUE_HEADER, b"soon"),
            (TYPE_HEADER, b"x"),
            (APPROVALS_HEADER, b"0"),
        ],
    ],
)
def test_a_snapshot_without_sound_hints_is_loaded_at_restore(
    headers: list[tuple[str, bytes]] | None,
) -> None:
    assert lazy_snapshot(_message(_parked(), headers)) is None


def test_a_terminal_snapshot_carries_only_the_terminal_flag() -> None:
    done = _parked().model_copy(update={"status": "completed", "waits": [], "timers": []})
    assert _headers(done) == [(TERMINAL_HEADER, b"true")]


def test_an_unread_saga_is_loaded_once_and_kept_decoded() -> None:
    state = _parked()
    lazy = lazy_snapshot(_message(state, _headers(state)))
    assert lazy is not None
    part = PartitionState(active={"s-1": lazy})
    loads: list[LazySnapshot] = []

    def load(found: LazySnapshot) -> Record | None:
        loads.append(found)
        return load_snapshot(found.message, AvroCodec(), LOGIC)

    first = part.state("s-1", load)
    assert first == state and part.active["s-1"] is first
    assert part.state("s-1", load) is first and loads == [lazy]  # loaded once


def test_an_unread_saga_that_does_not_load_is_dropped() -> None:
    state = _parked()
    lazy = lazy_snapshot(_message(state, _headers(state)))
    assert lazy is not None
    part = PartitionState(active={"s-1": lazy})
    assert part.state("s-1", lambda _: None) is None
    assert "s-1" not in part.active


def test_signing_on_an_unsigned_snapshot_does_not_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGALINE_SIGNING", "true")
    reset_signing()
    try:
        with pytest.raises(Unverified):
            load_snapshot(_message(_parked(), None, signed=False), AvroCodec(), LOGIC)
    finally:
        monkeypatch.undo()  # the session's own setting back, then read again
        reset_signing()


def test_open_approvals_are_counted_from_decoded_and_unread_sagas() -> None:
    state = _parked()
    lazy = lazy_snapshot(_message(state, _headers(state)))
    other = _parked("s-2").model_copy(update={"waits": []})
    assert approvals_by_type([state, lazy, other]) == {Approved.type_name: 2}
