"""Ed25519 signatures of sagaline's records: keys, the keyring, sign and verify.

Pure of Kafka.  A signature covers one record as Kafka carries it: its topic,
its key and its encoded value (``None`` for a tombstone), framed so that no
two different triples sign the same bytes (:func:`signed_message`).  It travels
in two headers: ``sagaline-signer`` (``NAME/KEYID``) and ``sagaline-sig`` (the
64 signature bytes, base64: headers stay ASCII text, so dead letters and tools that
treat headers as text carry them unharmed).

Keys live in one directory (``.sagaline/keys`` in dev, ``SAGALINE_KEYS_DIR``):

* ``NAME.key`` — the signer's private key (PKCS#8 PEM, owner-only), read only by
  the process that signs as ``NAME``;
* ``NAME.KEYID.pub`` — its public keys (SubjectPublicKeyInfo PEM).  A signer may
  have several (rotation: the new key signs, the old one still verifies what it
  signed); deleting a ``.pub`` file revokes that key.

The keyring is every ``.pub`` file of the directory; the signer's name is the
file name up to its first dot.  See docs/security.md and ADR 0017.

``cryptography`` reads and writes the key files; libsodium (PyNaCl) signs and
verifies, in about half the CPU of OpenSSL's Ed25519 (ADR 0025).  Ed25519 is
deterministic: both give the same signature bytes for the same key and message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import CryptoError

__all__ = [
    "ROLE_SIGNERS",
    "SIGNER_HEADER",
    "SIG_HEADER",
    "Keyring",
    "SignatureError",
    "Signer",
    "create_key",
    "ensure_role_keys",
    "key_id",
    "load_signer",
    "private_key_path",
    "revoke_key",
    "signed_message",
    "valid_name",
]

SIG_HEADER = "sagaline-sig"
SIGNER_HEADER = "sagaline-signer"
_DOMAIN = b"sagaline-sig-v1\x00"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

HeaderList = Sequence[tuple[str, bytes | str | None]]


class SignatureError(Exception):
    """A record's signature is missing, malformed, unknown or wrong."""

    def __init__(self, error_type: str, reason: str) -> None:
        super().__init__(f"{error_type}: {reason}")
        self.error_type = error_type
        self.reason = reason


def valid_name(name: str) -> bool:
    """Whether ``name`` can name a signer (letters, digits, ``_`` and ``-``)."""
    return _NAME.match(name) is not None


def _frame(part: bytes | None) -> bytes:
    if part is None:
        return b"\x00"
    return b"\x01" + len(part).to_bytes(8, "big") + part


def signed_message(topic: str, key: bytes | None, value: bytes | None) -> bytes:
    """The bytes a signature covers: the topic, the key and the value, each framed."""
    return _DOMAIN + _frame(topic.encode("utf-8")) + _frame(key) + _frame(value)


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable id of a public key (the first 8 bytes of its SHA-256, hex)."""
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    """One signer's private key: signs the records its process writes."""

    name: str
    key_id: str
    private: Ed25519PrivateKey = field(repr=False)
    #: libsodium's 64-byte secret key (seed and public key), from ``private``
    _secret: bytes = field(init=False, repr=False, compare=False)
    _who: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seed = self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        object.__setattr__(self, "_secret", crypto_sign_seed_keypair(seed)[1])
        object.__setattr__(self, "_who", f"{self.name}/{self.key_id}".encode("ascii"))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return crypto_sign(message, self._secret)[:64]

    def derive(self, label: bytes) -> bytes:
        """A 32-byte secret for ``label``, derived from the private key (HMAC-SHA256 of
        the label under the key's seed): only a holder of the private key has it."""
        return hmac.digest(self._secret[:32], b"sagaline-derive-v1\x00" + label, "sha256")

    def headers(
        self, topic: str, key: bytes | None, value: bytes | None
    ) -> list[tuple[str, bytes]]:
        """The two headers that sign ``(topic, key, value)``."""
        signature = self.sign(signed_message(topic, key, value))
        return [(SIGNER_HEADER, self._who), (SIG_HEADER, base64.b64encode(signature))]


def _only(headers: HeaderList | None, name: str) -> bytes | None:
    found = [v for k, v in headers or () if k == name]
    if not found:
        return None
    if len(found) > 1:
        raise SignatureError("BadSignature", f"more than one {name} header")
    value = found[0]
    if value is None:
        return None
    return value.encode("utf-8") if isinstance(value, str) else value


@dataclass(frozen=True)
class Keyring:
    """The public keys of every known signer: ``keys[name][key_id]``."""

    keys: dict[str, dict[str, Ed25519PublicKey]] = field(default_factory=dict)
    #: ``keys`` as libsodium's raw 32-byte public keys
    _raw: dict[str, dict[str, bytes]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = {name: {kid: _raw(k) for kid, k in ks.items()} for name, ks in self.keys.items()}
        object.__setattr__(self, "_raw", raw)

    @classmethod
    def load(cls, directory: Path) -> Keyring:
        """Every ``NAME.*.pub`` file of ``directory`` (an absent directory is empty)."""
        keys: dict[str, dict[str, Ed25519PublicKey]] = {}
        if not directory.is_dir():
            return cls(keys)
        for path in sorted(directory.glob("*.pub")):
            name = path.name.split(".", 1)[0]
            if not valid_name(name):
                continue
            loaded = serialization.load_pem_public_key(path.read_bytes())
            if not isinstance(loaded, Ed25519PublicKey):
                raise ValueError(f"{path.name} is not an Ed25519 public key")
            keys.setdefault(name, {})[key_id(loaded)] = loaded
        return cls(keys)

    def signers(self) -> list[str]:
        return sorted(self.keys)

    def verify(
        self, topic: str, key: bytes | None, value: bytes | None, headers: HeaderList | None
    ) -> str:
        """The name of the signer of ``(topic, key, value)``; :class:`SignatureError` if none."""
        who = _only(headers, SIGNER_HEADER)
        signature = _only(headers, SIG_HEADER)
        if who is None or signature is None:
            raise SignatureError("Unsigned", f"the record on {topic} carries no signature")
        name, _, kid = who.decode("utf-8", "replace").partition("/")
        public = self._raw.get(name, {}).get(kid)
        if public is None:
            shown = name if valid_name(name) else "?"
            raise SignatureError(
                "UnknownSigner", f"signer {shown!r} key {kid[:16]!r} is not in the keyring"
            )
        try:
            raw = base64.b64decode(signature, validate=True)
            if len(raw) != 64:
                raise CryptoError("not an Ed25519 signature")
            crypto_sign_open(raw + signed_message(topic, key, value), public)
        except (CryptoError, binascii.Error):
            raise SignatureError(
                "BadSignature", f"the signature of {name!r} does not match the record on {topic}"
            ) from None
        return name


def private_key_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.key"


def _write_owner_only(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _public_files(directory: Path, name: str) -> Iterable[Path]:
    return directory.glob(f"{name}.*.pub")


def create_key(directory: Path, name: str, *, rotate: bool = False) -> tuple[Path, str, bool]:
    """Make ``name``'s key pair in ``directory``: ``(private path, key id, created)``.

    An existing key is kept (``created`` False) unless ``rotate``: then a new
    private key replaces it and the old public keys stay in the keyring.
    """
    if not valid_name(name):
        raise ValueError(f"{name!r} cannot name a signer (letters, digits, _ and - only)")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    path = private_key_path(directory, name)
    if path.exists() and not rotate:
        return path, load_signer(path, name).key_id, False
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    kid = key_id(public)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (directory / f"{name}.{kid}.pub").write_bytes(pem)
    secret = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_owner_only(path, secret)
    return path, kid, True


def load_signer(path: Path, name: str) -> Signer:
    """The signer ``name`` with the private key at ``path``."""
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path.name} is not an Ed25519 private key")
    return Signer(name, key_id(loaded.public_key()), loaded)


def revoke_key(directory: Path, name: str, kid: str) -> bool:
    """Remove ``name``'s public key ``kid`` from the keyring; ``False`` if it was not there."""
    for path in _public_files(directory, name):
        if path.name == f"{name}.{kid}.pub":
            path.unlink()
            return True
    return False


#: the signers ``sagaline dev up`` and the tests make keys for (one per Kafka role principal)
ROLE_SIGNERS = (
    "admin",
    "client",
    "orchestrator",
    "worker",
    "relay",
    "auditor",
    "projection",
    "console",
)


def ensure_role_keys(directory: Path) -> Path:
    """Make a key pair for each of :data:`ROLE_SIGNERS` that has none; ``directory``."""
    for name in ROLE_SIGNERS:
        create_key(directory, name)
    return directory
