"""Personal and secret fields: encrypted with the saga's data key on the wire.

Mark a ``str`` (or ``str | None``) field of saga data, step arguments or step
results::

    from typing import Annotated
    from sagaline import Personal

    class RefundRequest(BaseModel):
        customer_email: Annotated[str | None, Personal] = None

A marked field is encrypted whenever the model is dumped to JSON (which is how
:func:`~sagaline.schemas.payload.to_payload` puts it on every topic and table)
and decrypted when a payload is validated.  The key is the saga's data key
(AES-256-GCM), which the runtime puts in scope with :func:`saga_keys` around a
decision, a step, a start or a read; nothing here does I/O.

* Ciphertext: ``sl:enc:v1:<base64url(nonce ‖ ciphertext ‖ tag)>``, with the saga
  id as associated data (a value copied into another saga does not decrypt).
* Deterministic: the nonce is ``HMAC-SHA256(data key, plaintext)[:12]`` (a
  synthetic IV), so the same value encrypts to the same bytes with the same key
  and strict replay still compares journal entries byte for byte.  The price:
  two equal values *within one saga* have equal ciphertexts.
* No key in scope: a ciphertext validates into a :class:`Sealed` value (a ``str``
  that reads :data:`ENCRYPTED`, or :data:`ERASED` when the scope says the key
  was destroyed) and dumps back to the very same ciphertext, so audit, replay and
  the test kit work on the other fields.  Writing a *plaintext* personal value with
  no key in scope raises :class:`PersonalDataError`: plaintext never leaves.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

from sagaline.schemas.base import Payload
from sagaline.schemas.errors import SchemaError

__all__ = [
    "CIPHER_PREFIX",
    "ENCRYPTED",
    "ERASED",
    "KEY_BYTES",
    "TEST_KEY",
    "KeyScope",
    "Personal",
    "PersonalDataError",
    "Sealed",
    "Secret",
    "ciphertext_paths",
    "current_scope",
    "decrypt_field",
    "encrypt_field",
    "has_personal",
    "is_ciphertext",
    "personal_fields",
    "saga_keys",
    "use_saga_keys",
    "use_test_keys",
]

CIPHER_PREFIX = "sl:enc:v1:"
#: what a personal field reads when its saga's data key was destroyed
ERASED = "⟨erased⟩"
#: what a personal field reads where no key is in scope (audit, console, projections)
ENCRYPTED = "⟨encrypted⟩"
#: AES-256
KEY_BYTES = 32
_NONCE = 12
_SIV_LABEL = b"sagaline-field-nonce\x00"


class PersonalDataError(SchemaError):
    """A personal field cannot be encrypted or decrypted (no key, wrong key, tampering)."""


class Sealed(str):
    """A personal value that cannot be read here: reads as a marker, dumps as its ciphertext."""

    ciphertext: str

    def __new__(cls, marker: str, ciphertext: str) -> Sealed:
        value = super().__new__(cls, marker)
        value.ciphertext = ciphertext
        return value

    @property
    def erased(self) -> bool:
        return str.__str__(self) == ERASED


class KeyScope:
    """The data key of one saga, as the runtime finds it.

    ``key`` is the 32-byte data key, or ``None`` when the saga has none (destroyed by
    ``sagaline erase``: then :attr:`erased` is true).  ``resolve`` looks the key up on
    first use, so a decision that touches no personal field costs no lookup.
    ``sealed`` collects the paths of the fields read as :class:`Sealed` in this scope
    (``Model.field``).
    """

    def __init__(
        self,
        saga_id: str,
        key: bytes | None = None,
        *,
        resolve: Callable[[], bytes | None] | None = None,
    ) -> None:
        if key is not None and len(key) != KEY_BYTES:
            raise PersonalDataError(f"a data key is {KEY_BYTES} bytes, got {len(key)}")
        self.saga_id = saga_id
        self._key = key
        self._resolve = resolve if key is None else None
        self.sealed: set[str] = set()

    @property
    def key(self) -> bytes | None:
        if self._resolve is not None:
            resolve, self._resolve = self._resolve, None
            self._key = resolve()
            if self._key is not None and len(self._key) != KEY_BYTES:
                raise PersonalDataError(f"a data key is {KEY_BYTES} bytes, got {len(self._key)}")
        return self._key

    @property
    def erased(self) -> bool:
        """True when the saga has no data key (any more)."""
        return self.key is None


#: ``False``: nothing set here (the test kit's fallback applies); ``None``: no key, on purpose
_SCOPE: ContextVar[KeyScope | bool | None] = ContextVar("sagaline_key_scope", default=False)


#: the scope used where none is set: only ever the test kit's (:func:`use_test_keys`)
_FALLBACK: list[KeyScope] = []
#: the test kit's fixed data key: its ciphertexts protect nothing, they only exercise the path
TEST_KEY = hashlib.sha256(b"sagaline test kit data key").digest()


def use_test_keys() -> None:
    """Encrypt with :data:`TEST_KEY` where no saga key is in scope (``SagaTestKit`` only).

    Never call this in a process that handles real data: a personal field written
    outside a runtime scope would then be encrypted with a published key.
    """
    if not _FALLBACK:
        _FALLBACK.append(KeyScope("sagaline-testkit", TEST_KEY))


def current_scope() -> KeyScope | None:
    """The key scope of the saga being processed, if any."""
    scope = _SCOPE.get()
    if scope is False:
        return _FALLBACK[0] if _FALLBACK else None
    return scope if isinstance(scope, KeyScope) else None


@contextmanager
def saga_keys(scope: KeyScope | None) -> Iterator[KeyScope | None]:
    """Encrypt and decrypt personal fields with ``scope``'s key inside the block."""
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def use_saga_keys(scope: KeyScope | None) -> None:
    """Make ``scope`` current until the next call in this context (a worker thread's task)."""
    _SCOPE.set(scope)


def is_ciphertext(value: object) -> bool:
    return isinstance(value, str) and value.startswith(CIPHER_PREFIX)


def encrypt_field(key: bytes, saga_id: str, plaintext: str) -> str:
    """Deterministic AES-256-GCM of ``plaintext`` under ``key``, bound to ``saga_id``."""
    data = plaintext.encode("utf-8")
    nonce = hmac.new(key, _SIV_LABEL + data, hashlib.sha256).digest()[:_NONCE]
    sealed = AESGCM(key).encrypt(nonce, data, saga_id.encode("utf-8"))
    return CIPHER_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def decrypt_field(key: bytes, saga_id: str, ciphertext: str) -> str:
    """The plaintext of ``ciphertext``; :class:`PersonalDataError` on a wrong key or tampering."""
    if not is_ciphertext(ciphertext):
        raise PersonalDataError("not a sagaline ciphertext")
    try:
        raw = base64.urlsafe_b64decode(ciphertext[len(CIPHER_PREFIX) :].encode("ascii"))
        if len(raw) < _NONCE + 16:
            raise PersonalDataError("ciphertext too short")
        data = AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], saga_id.encode("utf-8"))
    except (InvalidTag, binascii.Error, ValueError) as exc:
        raise PersonalDataError(
            f"a personal field of saga {saga_id} does not decrypt with its data key "
            "(tampered, or another saga's value)"
        ) from exc
    return data.decode("utf-8")


def _open(value: Any, info: core_schema.ValidationInfo) -> Any:
    if not is_ciphertext(value):
        return value
    if isinstance(value, Sealed):
        return value
    scope = current_scope()
    path = f"{info.config.get('title', '?') if info.config else '?'}.{info.field_name}"
    key = scope.key if scope is not None else None
    if scope is None or key is None:
        if scope is not None:
            scope.sealed.add(path)
        return Sealed(ERASED if scope is not None else ENCRYPTED, value)
    return decrypt_field(key, scope.saga_id, value)


def _seal(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Sealed):
        return value.ciphertext
    if is_ciphertext(value):
        return value
    scope = current_scope()
    key = scope.key if scope is not None else None
    if scope is None or key is None:
        why = (
            f"saga {scope.saga_id} has no data key (erased, or started without one)"
            if scope is not None
            else "no saga data key is in scope"
        )
        raise PersonalDataError(f"a personal field cannot be written: {why}")
    return encrypt_field(key, scope.saga_id, str(value))


def _is_str_field(source: Any) -> bool:
    if source is str:
        return True
    origin = typing.get_origin(source)
    if origin in (Union, types.UnionType):
        args = set(typing.get_args(source))
        return args == {str, type(None)}
    return False


class _Marker:
    """``Personal`` / ``Secret``: encrypt this ``str`` field (see the module docstring)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return self.kind

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        if not _is_str_field(source):
            name = getattr(source, "__name__", None) or repr(source)
            raise PersonalDataError(
                f"{self.kind} marks str or str | None fields only, not {name}: "
                "encode the value as a str first"
            )
        return core_schema.with_info_after_validator_function(
            _open,
            handler(source),
            serialization=core_schema.plain_serializer_function_ser_schema(_seal, when_used="json"),
        )


#: Marks a field as personal data (encrypted with the saga's key; erasable).
Personal = _Marker("Personal")
#: Marks a field as a secret (a credential, a token): encrypted and erasable like :data:`Personal`.
Secret = _Marker("Secret")


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


@functools.cache
def has_personal(model: type[BaseModel]) -> bool:
    """True when ``model`` or a model nested in its fields has a marked field."""
    seen: set[type[BaseModel]] = set()
    todo = [model]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if personal_fields(current):
            return True
        for info in current.model_fields.values():
            todo.extend(_models_in(info.annotation))
    return False


def _json_paths(value: Any, prefix: str, out: set[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _json_paths(v, f"{prefix}.{k}", out)
    elif isinstance(value, list):
        for v in value:
            _json_paths(v, prefix, out)
    elif is_ciphertext(value):
        out.add(prefix)


def ciphertext_paths(record: Any, out: set[str] | None = None) -> set[str]:
    """``Model.field`` of every encrypted value in the payloads inside ``record``
    (a wire record, or lists of them); nothing is decrypted."""
    found: set[str] = set() if out is None else out
    if isinstance(record, Payload):
        if record.data is not None and CIPHER_PREFIX.encode() in record.data:
            try:
                doc = json.loads(record.data)
            except ValueError:
                return found
            _json_paths(doc, record.type_name.rsplit(".", 1)[-1], found)
    elif isinstance(record, BaseModel):
        for name in type(record).model_fields:
            ciphertext_paths(getattr(record, name), found)
    elif isinstance(record, list | tuple):
        for item in record:
            ciphertext_paths(item, found)
    return found


def personal_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The names of ``model``'s fields marked :data:`Personal` or :data:`Secret`."""
    return tuple(
        name
        for name, info in model.model_fields.items()
        if any(isinstance(m, _Marker) for m in info.metadata)
    )
