"""Saga snapshots on the state topic: the hints beside them, and restore at first use.

Restoring a partition used to verify and decode every saga's latest snapshot
before the orchestrator took its first input: about 150 µs of CPU a saga with
signing on, 15 s for 100,000 sagas parked at an approval that may not be
touched for days (issue 11, goal 8). Now the orchestrator writes a few
**hints** as headers of every active snapshot, and restore keeps such a
snapshot as a :class:`LazySnapshot` (its Kafka message, unread) until the saga
is first needed: an input, or its earliest timer. Then it is verified and
decoded exactly as restore did (:func:`load_snapshot`).

The hints are not signed and decide nothing: ``sagaline-next-due`` only says
when to load the saga to look at its timers, ``sagaline-saga-type`` and
``sagaline-approvals`` only feed the open-approvals gauge. A snapshot without
them (written before them, or terminal) is loaded at restore, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from sagaline.orchestrator.runtime.ports import Codec, SagaLogic
from sagaline.orchestrator.runtime.signing_inputs import verified_state_record
from sagaline.schemas.base import Record
from sagaline.schemas.codec import trusted_decode

__all__ = [
    "APPROVALS_HEADER",
    "DUE_HEADER",
    "TERMINAL_HEADER",
    "TYPE_HEADER",
    "LazySnapshot",
    "Unverified",
    "approvals_by_type",
    "lazy_snapshot",
    "load_snapshot",
    "open_approvals",
    "snapshot_headers",
]

log = logging.getLogger(__name__)

TERMINAL_HEADER = "sagaline-terminal"
#: epoch milliseconds of the saga's earliest timer, ``-`` when it has none
DUE_HEADER = "sagaline-next-due"
TYPE_HEADER = "sagaline-saga-type"
#: how many approval waits are open (the ``sagaline_approvals_open`` gauge)
APPROVALS_HEADER = "sagaline-approvals"

_APPROVAL_KINDS = ("approval", "tool_approval")


def open_approvals(state: object) -> int:
    """How many approval waits ``state`` has open."""
    waits: Any = getattr(state, "waits", None) or ()
    return sum(1 for w in waits if getattr(w, "kind", "") in _APPROVAL_KINDS)


def snapshot_headers(logic: SagaLogic, state: Record) -> list[tuple[str, str | bytes | None]]:
    """The headers written with ``state``'s snapshot: terminal or not, and for an
    active saga the hints that let a restore leave it unread."""
    if logic.is_terminal(state):
        return [(TERMINAL_HEADER, b"true")]
    due = min((t.due_at for t in logic.timers(state)), default=None)
    return [
        (TERMINAL_HEADER, b"false"),
        (DUE_HEADER, b"-" if due is None else str(int(due.timestamp() * 1000)).encode()),
        (TYPE_HEADER, str(getattr(state, "saga_type", "")).encode("utf-8")),
        (APPROVALS_HEADER, str(open_approvals(state)).encode()),
    ]


@dataclass(frozen=True, slots=True)
class LazySnapshot:
    """An active saga's latest snapshot as restore read it: verified and decoded at first use."""

    message: Message
    #: epoch seconds of its earliest timer (``None``: it has none)
    due: float | None
    saga_type: str
    approvals: int


class Unverified(Exception):
    """The snapshot's signature does not let it be restored (logged and counted)."""


def lazy_snapshot(msg: Message) -> LazySnapshot | None:
    """``msg`` (an active saga's snapshot) kept unread, or ``None`` when its headers lack
    the hints (a terminal snapshot, or one written before them): load it now."""
    found: dict[str, bytes] = {}
    for header in msg.headers() or ():
        if isinstance(header[1], bytes):
            found[header[0]] = header[1]
    if found.get(TERMINAL_HEADER) != b"false":
        return None
    try:
        raw_due = found[DUE_HEADER]
        due = None if raw_due == b"-" else int(raw_due) / 1000
        return LazySnapshot(
            msg, due, found[TYPE_HEADER].decode("utf-8"), int(found[APPROVALS_HEADER])
        )
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


def load_snapshot(msg: Message, codec: Codec, logic: SagaLogic) -> Record:
    """The saga state in ``msg``, verified (with signing on) and decoded.

    Raises :class:`Unverified` for a snapshot whose signature does not verify, and
    the codec's error for one that does not decode.
    """
    if not verified_state_record(msg):
        raise Unverified(f"the snapshot at {msg.topic()}[{msg.partition()}]@{msg.offset()}")
    value = msg.value()
    assert value is not None  # tombstones are applied while reading
    return trusted_decode(codec, value, (logic.state_type,))


def approvals_by_type(states: Sequence[object]) -> dict[str, int]:
    """Open approval waits per saga type among ``states`` (decoded or lazy)."""
    counts: dict[str, int] = {}
    for state in states:
        if isinstance(state, LazySnapshot):
            saga_type: object = state.saga_type
            n = state.approvals
        else:
            saga_type, n = getattr(state, "saga_type", None), open_approvals(state)
        if isinstance(saga_type, str):
            counts[saga_type] = counts.get(saga_type, 0) + n
    return counts
