"""Unit tests of Ed25519 record signatures: keys, keyring, sign and verify, the input checks."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sagaline.orchestrator.runtime.errors import InputRejected
from sagaline.orchestrator.runtime.signing import (
    SIG_HEADER,
    SIGNER_HEADER,
    Keyring,
    SignatureError,
    create_key,
    load_signer,
    revoke_key,
    signed_message,
)
from sagaline.orchestrator.runtime.signing_inputs import (
    guard_input,
    never_dispatched,
    signed_identity,
)
from sagaline.orchestrator.runtime.signing_runtime import reset_signing, signer_for
from sagaline.schemas.base import Envelope
from sagaline.schemas.commands import SignalSaga
from sagaline.schemas.replies import StepSucceeded
from sagaline.schemas.state import SagaState, StepState

pytestmark = pytest.mark.unit

TOPIC = "sagaline.replies"
KEY = b"saga-1"
VALUE = b"\x00encoded record"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    for name in ("orchestrator", "worker", "client", "admin"):
        create_key(directory, name)
    return directory


def _signed(keys: Path, name: str, topic: str = TOPIC, key: bytes | None = KEY, value=VALUE):
    signer = load_signer(keys / f"{name}.key", name)
    return signer.headers(topic, key, value)


def test_libsodium_signs_the_bytes_openssl_signs_and_each_verifies_the_other(keys: Path) -> None:
    """ADR 0025: libsodium signs and verifies; records signed through OpenSSL (earlier
    versions, other tools holding the key) verify unchanged, and the reverse."""
    import base64

    signer = load_signer(keys / "worker.key", "worker")
    message = signed_message(TOPIC, KEY, VALUE)
    assert signer.sign(message) == signer.private.sign(message)  # Ed25519 is deterministic
    signer.private.public_key().verify(signer.sign(message), message)  # OpenSSL accepts it
    by_openssl = [
        (SIGNER_HEADER, f"worker/{signer.key_id}".encode()),
        (SIG_HEADER, base64.b64encode(signer.private.sign(message))),
    ]
    ring = Keyring.load(keys)
    assert ring.verify(TOPIC, KEY, VALUE, by_openssl) == "worker"
    short = [by_openssl[0], (SIG_HEADER, base64.b64encode(b"\x01" * 63))]
    with pytest.raises(SignatureError, match="does not match"):
        ring.verify(TOPIC, KEY, VALUE, short)


def test_a_signed_record_verifies_as_its_signer(keys: Path) -> None:
    ring = Keyring.load(keys)
    assert ring.signers() == ["admin", "client", "orchestrator", "worker"]
    headers = _signed(keys, "worker")
    assert [k for k, _ in headers] == [SIGNER_HEADER, SIG_HEADER]
    assert ring.verify(TOPIC, KEY, VALUE, headers) == "worker"


@pytest.mark.parametrize(
    ("topic", "key", "value"),
    [
        (TOPIC, KEY, VALUE + b"x"),  # tampered value
        (TOPIC, b"saga-2", VALUE),  # another key
        (TOPIC, None, VALUE),  # key removed
        ("sagaline.tasks", KEY, VALUE),  # replayed onto another topic
        (TOPIC, KEY, None),  # turned into a tombstone
    ],
)
def test_a_tampered_record_does_not_verify(
    keys: Path, topic: str, key: bytes | None, value: bytes | None
) -> None:
    headers = _signed(keys, "worker")
    with pytest.raises(SignatureError) as caught:
        Keyring.load(keys).verify(topic, key, value, headers)
    assert caught.value.error_type == "BadSignature"


def test_a_signature_claimed_for_another_signer_does_not_verify(keys: Path) -> None:
    headers = _signed(keys, "client")
    orchestrator = load_signer(keys / "orchestrator.key", "orchestrator")
    forged = [(SIGNER_HEADER, f"orchestrator/{orchestrator.key_id}".encode()), headers[1]]
    with pytest.raises(SignatureError) as caught:
        Keyring.load(keys).verify(TOPIC, KEY, VALUE, forged)
    assert caught.value.error_type == "BadSignature"


def test_unsigned_unknown_and_duplicated_signatures_are_refused(keys: Path, tmp_path: Path) -> None:
    ring = Keyring.load(keys)
    with pytest.raises(SignatureError, match="carries no signature"):
        ring.verify(TOPIC, KEY, VALUE, None)
    create_key(tmp_path / "other", "mallory")
    stranger = load_signer(tmp_path / "other" / "mallory.key", "mallory")
    with pytest.raises(SignatureError) as caught:
        ring.verify(TOPIC, KEY, VALUE, stranger.headers(TOPIC, KEY, VALUE))
    assert caught.value.error_type == "UnknownSigner"
    twice = _signed(keys, "worker") + _signed(keys, "worker")
    with pytest.raises(SignatureError, match="more than one"):
        ring.verify(TOPIC, KEY, VALUE, twice)


def test_framing_keeps_different_records_apart() -> None:
    assert signed_message("t", b"ab", b"c") != signed_message("t", b"a", b"bc")
    assert signed_message("t", None, b"") != signed_message("t", b"", b"")
    assert signed_message("t", b"k", None) != signed_message("t", b"k", b"")


def test_keys_are_owner_only_and_rotation_keeps_the_old_public_key(keys: Path) -> None:
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "worker.key").stat().st_mode) == 0o600
    old = _signed(keys, "worker")
    _, same, created = create_key(keys, "worker")
    assert not created
    _, new_id, created = create_key(keys, "worker", rotate=True)
    assert created and new_id != same
    ring = Keyring.load(keys)
    assert set(ring.keys["worker"]) == {same, new_id}
    assert ring.verify(TOPIC, KEY, VALUE, old) == "worker"  # signed before the rotation
    assert ring.verify(TOPIC, KEY, VALUE, _signed(keys, "worker")) == "worker"
    assert revoke_key(keys, "worker", same)
    with pytest.raises(SignatureError) as caught:
        Keyring.load(keys).verify(TOPIC, KEY, VALUE, old)
    assert caught.value.error_type == "UnknownSigner"


def test_a_bad_signer_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot name a signer"):
        create_key(tmp_path, "../evil")


# -------------------------------------------------------------- the orchestrator's checks


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _state(**steps: StepState) -> SagaState:
    return SagaState.model_validate(
        {
            "saga_id": "s1",
            "saga_type": "refund",
            "saga_version": 1,
            "data": {"type_name": "x", "version": 1, "data": b""},
            "steps": steps,
            "started_at": NOW,
            "updated_at": NOW,
            "input_sha256": "0" * 64,
        }
    )


def _reply(task_id: str, step: str = "charge", attempt: int = 1) -> StepSucceeded:
    return StepSucceeded.model_validate(
        {
            "envelope": Envelope(message_id="m", saga_id="s1", saga_type="refund", occurred_at=NOW),
            "step": step,
            "attempt": attempt,
            "idempotency_key": "s1/charge/1",
            "task_id": task_id,
            "result": None,
        }
    )


def test_a_reply_must_answer_a_dispatched_task() -> None:
    running = StepState(name="charge", status="running", run=1, attempt=2, task_id="s1/charge/1/2")
    state = _state(charge=running)
    assert never_dispatched(_reply("s1/charge/1/2"), state) is None
    assert never_dispatched(_reply("s1/charge/1/1"), state) is None  # an earlier attempt
    assert "never dispatched task" in (never_dispatched(_reply("s1/charge/1/3"), state) or "")
    assert "never dispatched task" in (never_dispatched(_reply("s1/charge/2/1"), state) or "")
    assert "never dispatched step" in (never_dispatched(_reply("s1/x/1/1", "x"), state) or "")
    assert never_dispatched(_reply("s1/x/1/1", "x"), None) is None  # no saga: NoSaga later
    own = StepState(name="charge", status="running", run=1, attempt=2, task_id="uuid-2")
    assert never_dispatched(_reply("uuid-1"), _state(charge=own)) is None  # the logic's own ids


@pytest.fixture
def signing_on(keys: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SAGALINE_SIGNING", "true")
    monkeypatch.setenv("SAGALINE_KEYS_DIR", str(keys))
    monkeypatch.setenv("SAGALINE_APPROVERS", '{"refund": ["admin"]}')
    monkeypatch.delenv("SAGALINE_SIGNER", raising=False)
    monkeypatch.delenv("SAGALINE_SIGNING_KEY", raising=False)
    reset_signing()
    yield keys
    reset_signing()


def _signal(by: str) -> SignalSaga:
    envelope = Envelope(message_id="m", saga_id="s1", saga_type="refund", occurred_at=NOW)
    return SignalSaga(envelope=envelope, name="approve", by=by, approved=True)


def test_approvals_are_checked_and_by_is_the_verified_signer(signing_on: Path) -> None:
    value, topic = b"signal", "sagaline.commands"
    state = _state()
    record = guard_input(
        topic,
        KEY,
        value,
        _signed(signing_on, "admin", topic, KEY, value),
        _signal("ceo@victim.example"),
        state,
    )
    assert isinstance(record, SignalSaga) and record.by == "admin for ceo@victim.example"
    with pytest.raises(InputRejected) as caught:
        guard_input(
            topic,
            KEY,
            value,
            _signed(signing_on, "client", topic, KEY, value),
            _signal("cfo@victim.example"),
            state,
        )
    assert caught.value.error_type == "NotApprover"
    with pytest.raises(InputRejected) as caught:
        guard_input(topic, KEY, value, None, _signal("x"), state)
    assert caught.value.error_type == "Unsigned"


def test_a_reply_signed_by_a_client_is_refused(signing_on: Path) -> None:
    running = StepState(name="charge", status="running", run=1, attempt=1, task_id="s1/charge/1/1")
    reply = _reply("s1/charge/1/1")
    headers = _signed(signing_on, "client", TOPIC, KEY, VALUE)
    with pytest.raises(InputRejected) as caught:
        guard_input(TOPIC, KEY, VALUE, headers, reply, _state(charge=running))
    assert caught.value.error_type == "WrongSigner"
    headers = _signed(signing_on, "worker", TOPIC, KEY, VALUE)
    assert guard_input(TOPIC, KEY, VALUE, headers, reply, _state(charge=running)) == reply


def test_a_missing_private_key_is_one_config_line(
    signing_on: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagaline.orchestrator.core.errors import ConfigError

    monkeypatch.setenv("SAGALINE_SIGNER", "relay")
    reset_signing()
    with pytest.raises(ConfigError, match="sagaline keys create relay") as caught:
        signer_for("worker")
    assert str(signing_on) not in str(caught.value)  # the key's path is never shown


def test_the_recorded_identity_starts_with_the_verified_signer() -> None:
    assert signed_identity("admin", None) == "admin"
    assert signed_identity("admin", "admin") == "admin"
    assert signed_identity("console", "alice") == "console for alice"


def test_signature_headers_are_ascii_text_and_garbage_is_a_bad_signature(keys: Path) -> None:
    headers = _signed(keys, "worker")
    for _, value in headers:
        value.decode("ascii")  # dead letters and text-minded tools carry them unharmed
    garbage = [headers[0], (SIG_HEADER, b"\xff not base64")]
    with pytest.raises(SignatureError) as caught:
        Keyring.load(keys).verify(TOPIC, KEY, VALUE, garbage)
    assert caught.value.error_type == "BadSignature"


def test_the_process_keyring_sees_a_new_key_after_its_check_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagaline.orchestrator.runtime import signing_runtime
    from sagaline.orchestrator.runtime.signing_runtime import keyring

    clock = [1000.0]
    monkeypatch.setattr(signing_runtime, "_clock", lambda: clock[0])
    directory = tmp_path / "ring"
    create_key(directory, "worker")
    monkeypatch.setenv("SAGALINE_SIGNING", "true")
    monkeypatch.setenv("SAGALINE_KEYS_DIR", str(directory))
    reset_signing()
    try:
        first = keyring()
        assert first.signers() == ["worker"]
        create_key(directory, "client")
        clock[0] += 0.05
        assert keyring() is first  # within 0.1 s: the directory is not looked at
        clock[0] += 0.06
        assert keyring().signers() == ["client", "worker"]
        revoke_key(directory, "client", next(iter(keyring().keys["client"])))
        clock[0] += 0.11
        assert keyring().signers() == ["worker"]
    finally:
        monkeypatch.undo()
        reset_signing()


def test_a_derived_secret_depends_on_the_key_and_the_label(keys: Path) -> None:
    worker = load_signer(keys / "worker.key", "worker")
    again = load_signer(keys / "worker.key", "worker")
    client = load_signer(keys / "client.key", "client")
    assert worker.derive(b"state-hints") == again.derive(b"state-hints")
    assert len(worker.derive(b"state-hints")) == 32
    assert worker.derive(b"state-hints") != worker.derive(b"other")
    assert worker.derive(b"state-hints") != client.derive(b"state-hints")
