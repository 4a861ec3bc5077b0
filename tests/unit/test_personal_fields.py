"""Personal fields: the cipher, the marker, key scopes and the key-encryption keys."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, Field
from pydantic_core import PydanticSerializationError

from sagaline import ERASED, Personal, SagaTestKit, Secret
from sagaline.orchestrator.core.payloads import PayloadDecodeError, from_payload, to_payload
from sagaline.orchestrator.runtime import data_keys
from sagaline.orchestrator.runtime.data_keys import DataKeyError, Keyring, load_keyring
from sagaline.sagas.refund import Notification, RefundAgent, RefundRequest
from sagaline.schemas.personal import (
    CIPHER_PREFIX,
    ENCRYPTED,
    KeyScope,
    PersonalDataError,
    Sealed,
    decrypt_field,
    encrypt_field,
    has_personal,
    personal_fields,
    saga_keys,
)

pytestmark = pytest.mark.unit

EMAIL = "ada.lovelace@example.com"


class Contact(BaseModel):
    email: Annotated[str, Personal]
    phone: Annotated[str | None, Personal] = None


class Customer(BaseModel):
    customer_id: int
    name: Annotated[str, Personal]
    api_token: Annotated[str | None, Secret] = None
    contact: Contact | None = None
    note: str = ""


def _key() -> bytes:
    return os.urandom(32)


def test_round_trip_encrypts_on_the_wire_and_decrypts_in_scope() -> None:
    key = _key()
    model = Customer(customer_id=7, name="Ada", contact=Contact(email=EMAIL), note="vip")
    with saga_keys(KeyScope("s-1", key)):
        payload = to_payload(model)
        back = from_payload(payload, Customer)
    assert payload.data is not None
    raw = payload.data.decode()
    assert EMAIL not in raw and "Ada" not in raw
    assert json.loads(raw)["note"] == "vip"  # unmarked fields stay as they were
    assert json.loads(raw)["name"].startswith(CIPHER_PREFIX)
    assert back == model


def test_encryption_is_deterministic_per_key_and_saga() -> None:
    key = _key()
    one = encrypt_field(key, "s-1", EMAIL)
    assert one == encrypt_field(key, "s-1", EMAIL)
    assert one != encrypt_field(key, "s-1", EMAIL + ".")
    assert one != encrypt_field(_key(), "s-1", EMAIL)
    assert one != encrypt_field(key, "s-2", EMAIL)
    assert decrypt_field(key, "s-1", one) == EMAIL


def test_tampering_another_saga_and_a_wrong_key_are_refused() -> None:
    key = _key()
    sealed = encrypt_field(key, "s-1", EMAIL)
    body = bytearray(sealed.encode())
    at = len(CIPHER_PREFIX) + 20  # inside the ciphertext (the end may hold padding bits)
    body[at] = ord("A") if body[at] != ord("A") else ord("B")
    with pytest.raises(PersonalDataError, match="does not decrypt"):
        decrypt_field(key, "s-1", body.decode())
    with pytest.raises(PersonalDataError, match="does not decrypt"):
        decrypt_field(key, "s-2", sealed)
    with pytest.raises(PersonalDataError, match="does not decrypt"):
        decrypt_field(_key(), "s-1", sealed)


def test_erased_saga_reads_marker_and_writes_back_the_same_bytes() -> None:
    key = _key()
    with saga_keys(KeyScope("s-1", key)):
        payload = to_payload(Customer(customer_id=1, name="Ada", contact=Contact(email=EMAIL)))
    erased = KeyScope("s-1", None)
    with saga_keys(erased):
        model = from_payload(payload, Customer)
        again = to_payload(model.model_copy(update={"note": "kept"}))
    assert model.name == ERASED and model.contact is not None and model.contact.email == ERASED
    assert isinstance(model.name, Sealed) and model.name.erased
    assert erased.sealed == {"Customer.name", "Contact.email"}
    assert again.data is not None and payload.data is not None
    assert json.loads(again.data)["name"] == json.loads(payload.data)["name"]
    assert json.loads(again.data)["note"] == "kept"


def test_without_a_scope_ciphertext_is_opaque_and_plaintext_never_leaves() -> None:
    key = _key()
    with saga_keys(KeyScope("s-1", key)):
        payload = to_payload(Contact(email=EMAIL))
    with saga_keys(None):
        seen = from_payload(payload, Contact)
        assert seen.email == ENCRYPTED
        with pytest.raises(PydanticSerializationError, match="no saga data key is in scope"):
            Contact(email=EMAIL).model_dump_json()
    with saga_keys(KeyScope("s-1", None)), pytest.raises(PydanticSerializationError):
        Contact(email=EMAIL).model_dump_json()


def test_a_tampered_payload_is_refused() -> None:
    key = _key()
    with saga_keys(KeyScope("s-1", key)):
        payload = to_payload(Contact(email=EMAIL))
        assert payload.data is not None
        forged = payload.model_copy(
            update={"data": payload.data.replace(b'"email":"sl:enc:v1:', b'"email":"sl:enc:v1:AA')}
        )
        with pytest.raises(PayloadDecodeError, match="does not decrypt"):
            from_payload(forged, Contact)


def test_only_str_fields_can_be_marked() -> None:
    with pytest.raises(
        PersonalDataError, match=re.escape("str or str | None fields only, not int")
    ):

        class Bad(BaseModel):
            amount: Annotated[int, Personal]

    with pytest.raises(PersonalDataError, match="only"):

        class AlsoBad(BaseModel):
            tags: Annotated[list[str], Secret] = Field(default_factory=list)


def test_marked_fields_are_found_also_nested() -> None:
    assert personal_fields(Customer) == ("name", "api_token")
    assert has_personal(Customer) and has_personal(Contact)
    assert has_personal(RefundRequest) and has_personal(Notification)

    class Plain(BaseModel):
        x: int

    assert not has_personal(Plain)


def test_unset_personal_field_keeps_old_refund_bytes() -> None:
    """Sagas started before the field existed encode exactly as before."""
    request = RefundRequest(customer_id=1, order_id="o-1", amount_cents=100)
    assert "customer_email" not in request.model_dump_json()


def test_test_kit_runs_the_refund_saga_with_a_personal_field() -> None:
    kit = SagaTestKit(RefundAgent, saga_id="refund-personal")
    kit.start(RefundRequest(customer_id=1, order_id="o-1", amount_cents=500, customer_email=EMAIL))
    start = kit.inputs[0]
    assert EMAIL.encode() not in (start.data.data or b"")  # type: ignore[attr-defined]
    assert kit.data.customer_email == EMAIL


# -- key-encryption keys ------------------------------------------------------------


def test_keyring_wraps_and_a_wrong_kek_is_refused() -> None:
    ring = Keyring("kek-1", {"kek-1": _key()})
    dk = _key()
    value = ring.wrap("s-1", dk)
    assert dk not in value and ring.unwrap("s-1", value) == dk
    with pytest.raises(DataKeyError, match="does not unwrap"):
        Keyring("kek-1", {"kek-1": _key()}).unwrap("s-1", value)
    with pytest.raises(DataKeyError, match="which this keyring does not hold"):
        Keyring("kek-2", {"kek-2": _key()}).unwrap("s-1", value)
    with pytest.raises(DataKeyError, match="does not unwrap"):
        ring.unwrap("s-2", value)  # bound to its saga


def test_kek_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    a, b = _key(), _key()
    env = f"new:{base64.b64encode(a).decode()},old:{base64.b64encode(b).decode()}"
    monkeypatch.setenv(data_keys.KEK_ENV, env)
    ring = load_keyring()
    assert ring.current == "new" and ring.keys == {"new": a, "old": b}
    monkeypatch.setenv(data_keys.KEK_ENV, "no-colon")
    with pytest.raises(DataKeyError, match="<id>:<base64"):
        load_keyring()


def test_kek_file_is_created_owner_only_and_rotated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys" / "kek.json"
    monkeypatch.delenv(data_keys.KEK_ENV, raising=False)
    monkeypatch.setenv(data_keys.KEK_FILE_ENV, str(path))
    with pytest.raises(DataKeyError, match="no key-encryption key"):
        load_keyring()
    first = load_keyring(create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    value = first.wrap("s-1", b"k" * 32)
    ring, new_id = data_keys.new_kek_in_file()
    assert new_id != first.current and ring.current == new_id
    assert load_keyring() == ring
    assert ring.unwrap("s-1", value) == b"k" * 32  # the old KEK stays until retired
    assert ring.wrapped_by(ring.wrap("s-1", b"k" * 32)) == new_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
