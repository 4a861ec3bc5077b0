"""Snapshot hints and restore at first use (``orchestrator/runtime/snapshots.py``).

The orchestrator writes hints beside every active snapshot, authenticated by a MAC
under a key derived from its signing key; restore keeps such a snapshot unread
(``LazySnapshot``) and the engine decodes it when the saga is first needed.  Here
without Kafka: the hints a real saga state gives, what restore makes of the headers
it finds (sound, missing, tampered, under another key), and ``PartitionState.state``
loading an unread saga once.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Message

from sagaline.orchestrator.runtime.batch import PartitionState
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.errors import RestoreError
from sagaline.orchestrator.runtime.signing_runtime import reset_signing
from sagaline.orchestrator.runtime.snapshots import (
    APPROVALS_HEADER,
    DUE_HEADER,
    MAC_HEADER,
    TERMINAL_HEADER,
    TYPE_HEADER,
    LazySnapshot,
    Unverified,
    approvals_by_type,
    lazy_snapshot,
    load_snapshot,
    snapshot_headers,
)
from sagaline.schemas.payload import payload_sha256, to_payload
from sagaline.schemas.state import SagaState, Timer, WaitState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from orchestrator_sagas import REGISTRY, Approved, PipeData

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LOGIC = CoreLogic(REGISTRY)
TOPIC = "t.state"
KEY = b"\x07" * 32  # a hints key (hints_key() derives the real one from the signing key)


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


def _headers(state: SagaState, mac_key: bytes | None = KEY) -> list[tuple[str, bytes]]:
    value = AvroCodec().encode(state)
    out = []
    for name, header in snapshot_headers(
        LOGIC, state, TOPIC, state.saga_id.encode(), value, mac_key
    ):
        assert isinstance(header, bytes)
        out.append((name, header))
    return out


def _message(state: SagaState, headers: list[tuple[str, bytes]] | None) -> Message:
    """The snapshot as restore reads it (unsigned: the hints' MAC authenticates it)."""
    key, value = state.saga_id.encode(), AvroCodec().encode(state)
    return Message(topic=TOPIC, partition=0, offset=7, key=key, value=value, headers=headers)


def test_an_active_snapshot_carries_its_earliest_timer_type_and_open_approvals() -> None:
    state = _parked()
    headers = dict(_headers(state))
    assert headers[TERMINAL_HEADER] == b"false"
    assert headers[DUE_HEADER] == str(int((NOW + timedelta(hours=1)).timestamp() * 1000)).encode()
    assert headers[TYPE_HEADER] == Approved.type_name.encode()
    assert headers[APPROVALS_HEADER] == b"1"
    assert len(headers[MAC_HEADER]) == 64  # hex 32-byte keyed BLAKE2b
    lazy = lazy_snapshot(_message(state, _headers(state)), KEY)
    assert lazy is not None
    assert lazy.due == (NOW + timedelta(hours=1)).timestamp()
    assert (lazy.saga_type, lazy.approvals) == (Approved.type_name, 1)


def test_a_saga_without_timers_has_no_due_time() -> None:
    state = _parked().model_copy(update={"timers": []})
    lazy = lazy_snapshot(_message(state, _headers(state)), KEY)
    assert lazy is not None and lazy.due is None


def test_hints_that_do_not_authenticate_are_not_trusted() -> None:
    """A forged or altered snapshot cannot choose when (or whether) its saga is loaded:
    restore verifies it at once, by its signature."""
    state = _parked()
    good = _headers(state)
    assert lazy_snapshot(_message(state, good), b"\x08" * 32) is None  # another key
    tampered = [(n, b"-" if n == DUE_HEADER else v) for n, v in good]
    assert lazy_snapshot(_message(state, tampered), KEY) is None  # "no timer": refused
    other = _parked().model_copy(update={"waits": []})
    assert lazy_snapshot(_message(other, good), KEY) is None  # hints of another value
    unmacced = [(n, v) for n, v in good if n != MAC_HEADER]
    assert lazy_snapshot(_message(state, unmacced), KEY) is None
    assert lazy_snapshot(_message(state, unmacced), None) is not None  # signing off


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
    assert lazy_snapshot(_message(_parked(), headers), None) is None


def test_a_terminal_snapshot_carries_only_the_terminal_flag() -> None:
    done = _parked().model_copy(update={"status": "completed", "waits": [], "timers": []})
    assert _headers(done) == [(TERMINAL_HEADER, b"true")]


def test_an_unread_saga_is_loaded_once_and_kept_decoded() -> None:
    state = _parked()
    lazy = lazy_snapshot(_message(state, _headers(state)), KEY)
    assert lazy is not None
    part = PartitionState(active={"s-1": lazy})
    first = part.state("s-1", AvroCodec(), LOGIC)
    assert first == state and part.active["s-1"] is first  # kept decoded
    assert part.state("s-1", AvroCodec(), LOGIC) is first  # not decoded again
    assert part.state("other", AvroCodec(), LOGIC) is None


def test_an_unread_snapshot_that_does_not_decode_stops_the_orchestrator() -> None:
    state = _parked()
    headers = _headers(state)
    broken = Message(topic=TOPIC, partition=0, offset=9, key=b"s-1", value=b"\x00", headers=headers)
    lazy = LazySnapshot(broken, None, Approved.type_name, 1)
    with pytest.raises(RestoreError, match=r"saga s-1 at t.state\[0\]@9"):
        lazy.load(AvroCodec(), LOGIC)


def test_signing_on_an_unsigned_snapshot_loaded_at_restore_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGALINE_SIGNING", "true")
    reset_signing()
    try:
        with pytest.raises(Unverified):
            load_snapshot(_message(_parked(), None), AvroCodec(), LOGIC)
    finally:
        monkeypatch.undo()  # the session's own setting back, then read again
        reset_signing()


def test_open_approvals_are_counted_from_decoded_and_unread_sagas() -> None:
    state = _parked()
    lazy = lazy_snapshot(_message(state, _headers(state)), KEY)
    other = _parked("s-2").model_copy(update={"waits": []})
    assert approvals_by_type([state, lazy, other]) == {Approved.type_name: 2}
