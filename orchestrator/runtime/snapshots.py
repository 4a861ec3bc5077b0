"""Saga snapshots on the state topic: the hints beside them, and restore at first use.

Restoring a partition used to verify and decode every saga's latest snapshot
before the orchestrator took its first input: about 150 µs of CPU a saga with
signing on, 15 s for 100,000 sagas parked at an approval that may not be
touched for days (issue 11, goal 8). Now the orchestrator writes a few
**hints** as headers of every active snapshot, and restore keeps such a
snapshot as a :class:`LazySnapshot` (its Kafka message, unread) until the saga
is first needed: an input, or its earliest timer. Then it is decoded, as
restore did (:func:`load_snapshot`).

With signing on, the hints and the snapshot they travel with are
authenticated by ``sagaline-hints-mac``: a keyed BLAKE2b MAC over the topic,
key, value and hints, under a key derived from the orchestrator's private signing
key (only an orchestrator has it; checking it costs a few microseconds where
the Ed25519 signature costs 60).  A snapshot whose MAC checks is the
orchestrator's own and is later decoded without verifying its signature again;
one without hints or whose MAC does not check (written before the hints, by an
orchestrator with another key, or forged) is verified and decoded at restore,
as before.  Terminal snapshots are always loaded at restore.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from sagaline.orchestrator.runtime.errors import RestoreError
from sagaline.orchestrator.runtime.ports import Codec, SagaLogic
from sagaline.orchestrator.runtime.signing_inputs import verified_state_record
from sagaline.orchestrator.runtime.signing_runtime import signer_for
from sagaline.schemas.base import Record
from sagaline.schemas.codec import trusted_decode

__all__ = [
    "APPROVALS_HEADER",
    "DUE_HEADER",
    "MAC_HEADER",
    "TERMINAL_HEADER",
    "TYPE_HEADER",
    "LazySnapshot",
    "Unverified",
    "approvals_by_type",
    "hints_key",
    "lazy_snapshot",
    "load_snapshot",
    "open_approvals",
    "snapshot_headers",
]

TERMINAL_HEADER = "sagaline-terminal"
#: epoch milliseconds of the saga's earliest timer, ``-`` when it has none
DUE_HEADER = "sagaline-next-due"
TYPE_HEADER = "sagaline-saga-type"
#: how many approval waits are open (the ``sagaline_approvals_open`` gauge)
APPROVALS_HEADER = "sagaline-approvals"
#: hex keyed-BLAKE2b MAC of topic, key, value and hints (signing on)
MAC_HEADER = "sagaline-hints-mac"
_HINTS = (TERMINAL_HEADER, DUE_HEADER, TYPE_HEADER, APPROVALS_HEADER)

_APPROVAL_KINDS = ("approval", "tool_approval")


def open_approvals(state: object) -> int:
    """How many approval waits ``state`` has open."""
    waits: Any = getattr(state, "waits", None) or ()
    return sum(1 for w in waits if getattr(w, "kind", "") in _APPROVAL_KINDS)


def hints_key() -> bytes | None:
    """The key of ``sagaline-hints-mac``, derived from this process's orchestrator signing
    key; ``None`` when signing is off (then nothing on the state topic is verified)."""
    signer = signer_for("orchestrator")
    return None if signer is None else signer.derive(b"state-hints")


def snapshot_headers(
    logic: SagaLogic, state: Record, topic: str, key: bytes, value: bytes, mac_key: bytes | None
) -> list[tuple[str, str | bytes | None]]:
    """The headers written with ``state``'s snapshot (``value`` on ``topic`` under ``key``):
    terminal or not, and for an active saga the hints that let a restore leave it unread,
    authenticated under ``mac_key`` (:func:`hints_key`)."""
    if logic.is_terminal(state):
        return [(TERMINAL_HEADER, b"true")]
    due = min((t.due_at for t in logic.timers(state)), default=None)
    hints: list[tuple[str, bytes]] = [
        (TERMINAL_HEADER, b"false"),
        (DUE_HEADER, b"-" if due is None else str(int(due.timestamp() * 1000)).encode()),
        (TYPE_HEADER, str(getattr(state, "saga_type", "")).encode("utf-8")),
        (APPROVALS_HEADER, str(open_approvals(state)).encode()),
    ]
    headers: list[tuple[str, str | bytes | None]] = list(hints)
    if mac_key is not None:
        mac = _mac(mac_key, topic, key, value, [hint for _, hint in hints])
        headers.append((MAC_HEADER, mac.hex().encode()))
    return headers


def _mac(mac_key: bytes, topic: str, key: bytes, value: bytes, hints: Sequence[bytes]) -> bytes:
    """Keyed BLAKE2b (32 bytes) of topic, key, value and the four hints' values (in
    :data:`_HINTS` order), each framed ``LEN:BYTES`` so that no two inputs frame alike."""
    t, (h0, h1, h2, h3) = topic.encode(), hints
    framed = _FRAME % (
        len(t), t, len(key), key, len(value), value,
        len(h0), h0, len(h1), h1, len(h2), h2, len(h3), h3,
    )  # fmt: skip
    return hashlib.blake2b(framed, key=mac_key, digest_size=32, person=b"sagaline-hints").digest()


_FRAME = b"%d:%b" * 7


@dataclass(frozen=True, slots=True)
class LazySnapshot:
    """An active saga's latest snapshot as restore read it (its hints authenticated):
    decoded at first use."""

    message: Message
    #: epoch seconds of its earliest timer (``None``: it has none)
    due: float | None
    saga_type: str
    approvals: int

    def load(self, codec: Codec, logic: SagaLogic) -> Record:
        """The saga's state, decoded now (:func:`load_snapshot`, not verified again)."""
        return load_snapshot(self.message, codec, logic, verify=False)


class Unverified(Exception):
    """The snapshot's signature does not let it be restored (logged and counted)."""


def lazy_snapshot(msg: Message, mac_key: bytes | None) -> LazySnapshot | None:
    """``msg`` (an active saga's snapshot) kept unread, or ``None`` when it must be loaded
    now: a terminal snapshot, one without sound hints, or (``mac_key`` given: signing
    on) one whose ``sagaline-hints-mac`` does not check."""
    found = dict(msg.headers() or ())  # restore reads 100,000s of these: keep it short
    if found.get(TERMINAL_HEADER) != b"false":
        return None
    hints: list[bytes] = []
    for name in _HINTS:
        hint = found.get(name)
        if not isinstance(hint, bytes):
            return None
        hints.append(hint)
    try:
        due = None if hints[1] == b"-" else int(hints[1]) / 1000
        lazy = LazySnapshot(msg, due, hints[2].decode("utf-8"), int(hints[3]))
    except (ValueError, UnicodeDecodeError):
        return None
    if mac_key is None:
        return lazy
    key, value, mac = msg.key(), msg.value(), found.get(MAC_HEADER)
    if key is None or value is None or not isinstance(mac, bytes):
        return None
    expected = _mac(mac_key, msg.topic() or "", key, value, hints).hex().encode()
    return lazy if hmac.compare_digest(expected, mac) else None


def load_snapshot(msg: Message, codec: Codec, logic: SagaLogic, *, verify: bool = True) -> Record:
    """The saga state in ``msg``, decoded (built without validating it again: the
    orchestrator validated it when it wrote it); with ``verify`` (and signing on) its
    signature is verified first (a ``LazySnapshot``'s was authenticated at restore).

    Raises :class:`Unverified` for a snapshot whose signature does not verify, and
    :class:`RestoreError` for one that does not decode (a restore cannot go on).
    """
    if verify and not verified_state_record(msg):
        raise Unverified(f"the snapshot at {_where(msg)}")
    value = msg.value()
    assert value is not None  # tombstones are applied while reading
    try:
        return trusted_decode(codec, value, (logic.state_type,))
    except Exception as exc:
        saga = (msg.key() or b"").decode("utf-8", "replace")
        raise RestoreError(
            f"cannot decode the state of saga {saga} at {_where(msg)}: {exc}"
        ) from exc


def _where(msg: Message) -> str:
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


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
