"""The orchestrator's checks of a signed input, before it is decided.

With signing on (:mod:`sagaline.orchestrator.runtime.signing_runtime`), an input is
decided only when

* its signature verifies against the keyring (else ``Unsigned``, ``UnknownSigner``
  or ``BadSignature``);
* its signer may write it: a reply is signed by a principal that runs steps
  (``SAGALINE_REPLY_SIGNERS``), a command by one of ``SAGALINE_COMMAND_SIGNERS``
  (else ``WrongSigner``);
* a reply answers a task the saga dispatched: its step's current task, or an
  earlier attempt or run of it (else ``NeverDispatched``; judged for sagaline's own
  task ids, ``SAGA/STEP/RUN/ATTEMPT``, only);
* an approval or rejection comes from an approver of the saga's type
  (``SAGALINE_APPROVERS``; else ``NotApprover``).

Each refusal raises :class:`InputRejected` and is dead-lettered with its reason.
The verified signer heads the ``by`` / ``requested_by`` of the input (the free text it
claimed follows as a display note: ``admin for alice@example.com``): it is the identity
the journal records.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Message
from prometheus_client import Counter

from sagaline.orchestrator.runtime.errors import InputRejected
from sagaline.orchestrator.runtime.signing_runtime import signing_config, verify_record
from sagaline.schemas.base import Record
from sagaline.schemas.commands import SignalSaga, StartSaga
from sagaline.schemas.replies import REPLY_TYPES, CompensationFailed, CompensationSucceeded

__all__ = [
    "STATE_REFUSED",
    "guard_input",
    "guard_message",
    "never_dispatched",
    "signed_identity",
    "verified_state_record",
]

log = logging.getLogger(__name__)

#: state records skipped on restore (unsigned, unknown signer, bad signature, wrong signer)
STATE_REFUSED = Counter(
    "sagaline_state_records_refused_total",
    "State records skipped on restore because their signature did not verify",
    ["reason"],
)


def _attempt_of(task_id: str, prefix: str) -> tuple[int, ...] | None:
    """The numbers after ``prefix`` in ``task_id`` (``run/attempt`` or ``attempt``)."""
    if not task_id.startswith(prefix):
        return None
    rest = task_id[len(prefix) :].split("/")
    if not all(part.isdigit() for part in rest):
        return None
    return tuple(int(part) for part in rest)


def never_dispatched(record: Record, state: Record | None) -> str | None:
    """Why ``record`` (a reply) answers no task ``state``'s saga dispatched; ``None`` if it may."""
    if state is None:
        return None  # no saga: the decider refuses it (NoSaga)
    step = str(getattr(record, "step", ""))
    task_id = str(getattr(record, "task_id", ""))
    saga_id = str(getattr(state, "saga_id", ""))
    steps: dict[str, Any] = getattr(state, "steps", {})
    st = steps.get(step)
    if st is None:
        if int(getattr(state, "steps_retired", 0)) > 0:
            return None  # a late reply of a finished, retired step: the decider ignores it
        return f"saga {saga_id} never dispatched step {step!r}"
    if isinstance(record, CompensationSucceeded | CompensationFailed):
        if task_id == st.compensation_task_id:
            return None
        found = _attempt_of(task_id, f"{saga_id}/{step}/{max(st.run, 1)}/compensate/")
        if found is not None and len(found) == 1 and 1 <= found[0] <= st.compensation_attempt:
            return None
        return f"saga {saga_id} never dispatched compensation task {task_id!r}"
    if task_id == st.task_id:
        return None
    prefix = f"{saga_id}/{step}/"
    if not str(st.task_id or "").startswith(prefix):
        return None  # a logic with task ids of its own: only it can tell
    found = _attempt_of(task_id, prefix)
    if found is not None and len(found) == 2 and (1, 1) <= found <= (max(st.run, 1), st.attempt):
        return None
    return f"saga {saga_id} never dispatched task {task_id!r} of step {step!r}"


def signed_identity(signer: str, claimed: str | None) -> str:
    """Who an input is recorded as coming from: the verified signer, then, as a display
    note only, the free text the input claims (``admin for alice@example.com``)."""
    claimed = (claimed or "").strip()
    return signer if claimed in ("", signer) else f"{signer} for {claimed[:200]}"


def _with_signer(record: Record, signer: str) -> Record:
    field = "requested_by" if isinstance(record, StartSaga) else "by"
    if field not in type(record).model_fields:
        return record
    claimed = getattr(record, field, None)
    return record.model_copy(update={field: signed_identity(signer, claimed)})


def guard_input(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Any,
    record: Record,
    state: Record | None,
) -> Record:
    """``record`` as the orchestrator decides it (its ``by`` the verified signer), or raise
    :class:`InputRejected`.  A no-op when signing is off."""
    config = signing_config()
    if not config.enabled:
        return record
    name = type(record).__name__
    is_reply = isinstance(record, REPLY_TYPES)
    allowed = config.reply_signers if is_reply else config.command_signers
    signer = verify_record(topic, key, value, headers, allowed, name) or ""
    if is_reply:
        why = never_dispatched(record, state)
        if why is not None:
            raise InputRejected("NeverDispatched", f"{name} signed by {signer!r}: {why}")
    if isinstance(record, SignalSaga) and record.approved is not None and state is not None:
        saga_type = str(getattr(state, "saga_type", ""))
        approvers = config.approvers_of(saga_type)
        if signer not in approvers:
            raise InputRejected(
                "NotApprover",
                f"{signer!r} may not approve or reject a {saga_type} saga "
                f"(approvers: {sorted(approvers)})",
            )
    return _with_signer(record, signer)


def guard_message(msg: Message, record: Record, state: Record | None) -> Record:
    """:func:`guard_input` of a consumed message."""
    return guard_input(msg.topic() or "", msg.key(), msg.value(), msg.headers(), record, state)


def verified_state_record(msg: Message) -> bool:
    """Whether a record read back from the state topic may be restored.

    With signing on, a snapshot or tombstone not signed by an orchestrator signer is
    skipped: logged as an error and counted, never restored.
    """
    config = signing_config()
    if not config.enabled:
        return True
    topic, key = msg.topic() or "", msg.key()
    what = "tombstone" if msg.value() is None else "snapshot"
    try:
        verify_record(
            topic, key, msg.value(), msg.headers(), config.orchestrator_signers, f"state {what}"
        )
    except InputRejected as exc:
        STATE_REFUSED.labels(exc.error_type).inc()
        shown = (key or b"")[:200].decode("utf-8", "replace")
        log.error(
            "skipping the %s of saga %s at %s[%s]@%s: %s: %s",
            what,
            shown,
            topic,
            msg.partition(),
            msg.offset(),
            exc.error_type,
            exc,
        )
        return False
    return True
