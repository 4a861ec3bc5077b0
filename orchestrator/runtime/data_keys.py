"""Per-saga data keys: wrapped by a key-encryption key, kept in a compacted topic.

Every saga with a personal field (``sagaline.schemas.personal``) has one random
256-bit data key.  It lives on ``<prefix>.keys`` (compacted, keyed by saga id),
wrapped with AES-256-GCM by the key-encryption key (KEK) whose id the record
names.  The client writes the key record (acked) before the ``StartSaga``; the
orchestrator, the workers and the tools read the topic to its end when they meet
a saga whose key they do not hold, and pick up new records (and tombstones) at
most :attr:`DataKeyStore.refresh_s` after their last look.

``sagaline erase SAGA`` writes a tombstone: every process drops the key when it
reads the tombstone, and the log cleaner removes the record (see the topic's
compaction settings in ``topics.py`` and docs/security.md).  Without the key,
the saga's personal fields read as ``⟨erased⟩``, forever.

The KEK comes from ``SAGALINE_KEK`` (``<id>:<base64 of 32 bytes>``, several
separated by commas, the first one current) or from the key file named by
``SAGALINE_KEK_FILE`` (default: ``kek.json`` beside the dev env file, created
owner-only on first use by a writer): ``{"current": id, "keys": {id: base64}}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel

from sagaline.orchestrator.config import Settings, TopicNames, dev_env_path
from sagaline.orchestrator.core.errors import OrchestratorError
from sagaline.orchestrator.runtime.kafka_config import client_producer_config, reader_config
from sagaline.orchestrator.runtime.stable_read import (
    ReadToEndError,
    read_to_end,
    stable_offsets,
    topic_partitions,
)
from sagaline.schemas.base import Payload
from sagaline.schemas.payload import to_payload
from sagaline.schemas.personal import KEY_BYTES, KeyScope, has_personal, saga_keys

__all__ = [
    "KEK_ENV",
    "KEK_FILE_ENV",
    "DataKeyError",
    "DataKeyStore",
    "Keyring",
    "configure",
    "default_store",
    "encode_payload",
    "journal_keys_topic",
    "kek_file_path",
    "keys_topic",
    "load_keyring",
    "new_kek_in_file",
    "saga_scope",
    "write_keyring",
]

KEK_ENV = "SAGALINE_KEK"
KEK_FILE_ENV = "SAGALINE_KEK_FILE"
_RECORD_VERSION = 1


class DataKeyError(OrchestratorError):
    """No key-encryption key, an unknown KEK id, or a key record that does not unwrap."""


def keys_topic(names: TopicNames) -> str:
    """The compacted topic of wrapped data keys (``<prefix>.keys``)."""
    return f"{names.prefix}.keys"


def journal_keys_topic(journal_topic: str) -> str:
    """The keys topic beside a journal topic (``<prefix>.journal`` → ``<prefix>.keys``)."""
    return journal_topic.removesuffix(".journal") + ".keys"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DataKeyError(f"{what} is not base64") from exc
    return raw


@dataclass(frozen=True)
class Keyring:
    """Key-encryption keys by id; ``current`` wraps new data keys."""

    current: str
    keys: Mapping[str, bytes]

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise DataKeyError(f"the current KEK {self.current!r} is not in the keyring")
        for kek_id, key in self.keys.items():
            if len(key) != KEY_BYTES or not kek_id or ":" in kek_id:
                raise DataKeyError(f"KEK {kek_id!r} must be {KEY_BYTES} bytes with an id")

    def wrap(self, saga_id: str, data_key: bytes) -> bytes:
        """The key record's value: ``data_key`` sealed by the current KEK, bound to the saga."""
        nonce = os.urandom(12)
        sealed = AESGCM(self.keys[self.current]).encrypt(nonce, data_key, saga_id.encode())
        record = {"v": _RECORD_VERSION, "kek": self.current, "wrapped": _b64(nonce + sealed)}
        return json.dumps(record, sort_keys=True).encode("utf-8")

    def unwrap(self, saga_id: str, value: bytes) -> bytes:
        """The data key in a key record (:class:`DataKeyError` if no KEK here opens it)."""
        try:
            record = json.loads(value)
            kek_id, wrapped = str(record["kek"]), str(record["wrapped"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataKeyError(f"the key record of saga {saga_id} is malformed") from exc
        kek = self.keys.get(kek_id)
        if kek is None:
            raise DataKeyError(
                f"the data key of saga {saga_id} is wrapped by KEK {kek_id!r}, "
                f"which this keyring does not hold (it holds {', '.join(sorted(self.keys))})"
            )
        raw = _unb64(wrapped, f"the key record of saga {saga_id}")
        try:
            return AESGCM(kek).decrypt(raw[:12], raw[12:], saga_id.encode())
        except (InvalidTag, ValueError) as exc:
            raise DataKeyError(
                f"the data key of saga {saga_id} does not unwrap with KEK {kek_id!r}"
            ) from exc

    def wrapped_by(self, value: bytes) -> str | None:
        try:
            return str(json.loads(value)["kek"])
        except (ValueError, KeyError, TypeError):
            return None


def kek_file_path() -> Path:
    """``SAGALINE_KEK_FILE``, else ``kek.json`` beside the dev env file (``.sagaline/``)."""
    explicit = os.environ.get(KEK_FILE_ENV)
    return Path(explicit) if explicit else dev_env_path().parent / "kek.json"


def _parse_env(raw: str) -> Keyring:
    keys: dict[str, bytes] = {}
    current = ""
    for item in (part.strip() for part in raw.split(",") if part.strip()):
        kek_id, sep, encoded = item.partition(":")
        if not sep:
            raise DataKeyError(f"{KEK_ENV} entries are <id>:<base64 of {KEY_BYTES} bytes>")
        keys[kek_id] = _unb64(encoded, f"{KEK_ENV} entry {kek_id!r}")
        current = current or kek_id
    if not keys:
        raise DataKeyError(f"{KEK_ENV} is empty")
    return Keyring(current, keys)


def _read_file(path: Path) -> Keyring:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        keys = {str(k): _unb64(str(v), f"KEK {k!r} in {path}") for k, v in doc["keys"].items()}
        return Keyring(str(doc["current"]), keys)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataKeyError(f"cannot read the KEK file {path}: {type(exc).__name__}") from exc


def write_keyring(path: Path, ring: Keyring) -> None:
    """Write ``ring`` to the key file ``path`` (owner-only, replaced atomically)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    doc = {"current": ring.current, "keys": {k: _b64(v) for k, v in ring.keys.items()}}
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, json.dumps(doc, indent=2, sort_keys=True).encode("utf-8"))
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_keyring(*, create: bool = False) -> Keyring:
    """The process's KEKs: ``SAGALINE_KEK``, else the key file (created when ``create``)."""
    raw = os.environ.get(KEK_ENV)
    if raw:
        return _parse_env(raw)
    path = kek_file_path()
    if not path.exists():
        if not create:
            raise DataKeyError(
                f"no key-encryption key: set {KEK_ENV} or {KEK_FILE_ENV} "
                f"(no file at {path}; `sagaline kek rotate` creates one)"
            )
        ring = Keyring("kek-1", {"kek-1": os.urandom(KEY_BYTES)})
        write_keyring(path, ring)
        return ring
    return _read_file(path)


def new_kek_in_file(path: Path | None = None) -> tuple[Keyring, str]:
    """Add a new current KEK to the key file (old ones kept to unwrap); ``(ring, new id)``."""
    target = path or kek_file_path()
    old = _read_file(target) if target.exists() else None
    keys = dict(old.keys) if old else {}
    n = len(keys) + 1
    while f"kek-{n}" in keys:
        n += 1
    new_id = f"kek-{n}"
    keys[new_id] = os.urandom(KEY_BYTES)
    ring = Keyring(new_id, keys)
    write_keyring(target, ring)
    return ring, new_id


class DataKeyStore:
    """This process's view of the keys topic: a cache refreshed by reads to the end."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        keyring: Keyring | None = None,
        refresh_s: float = 1.0,
        timeout: float = 10.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.refresh_s = refresh_s
        self.timeout = timeout
        self._keyring = keyring
        self._given = keyring is not None
        self._lock = threading.RLock()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._positions: dict[int, int] = {}
        self._wrapped: dict[str, bytes] = {}
        self._plain: dict[str, bytes] = {}
        self._looked = 0.0

    # -- reading ------------------------------------------------------------------

    def keyring(self, *, create: bool = False) -> Keyring:
        if self._keyring is None:
            self._keyring = load_keyring(create=create)
        return self._keyring

    def _reader(self) -> Consumer:
        if self._consumer is None:
            group = f"sagaline-keys-{uuid.uuid4().hex[:12]}"
            self._consumer = Consumer(reader_config(self.bootstrap_servers, group))
        return self._consumer

    def catch_up(self) -> None:
        """Read every key record written since the last look (tombstones drop keys)."""
        with self._lock:
            consumer = self._reader()
            try:
                parts = topic_partitions(consumer, self.topic, self.timeout)
                ends = stable_offsets(consumer, self.topic, parts, timeout=self.timeout)
                ranges = {
                    p: (max(self._positions.get(p, low), low), high)
                    for p, (low, high) in ends.items()
                }
                for rec in read_to_end(consumer, self.topic, ranges, timeout=self.timeout * 6):
                    self._apply(rec.text_key, rec.value)
            except (ReadToEndError, KafkaException) as exc:
                raise DataKeyError(f"cannot read {self.topic}: {exc}") from exc
            self._positions = {p: high for p, (_, high) in ends.items()}
            self._looked = time.monotonic()

    def _apply(self, saga_id: str | None, value: bytes | None) -> None:
        if saga_id is None:
            return
        self._plain.pop(saga_id, None)
        if value is None:
            self._wrapped.pop(saga_id, None)  # erased: the key is gone from this process too
        else:
            self._wrapped[saga_id] = value

    def key(self, saga_id: str) -> bytes | None:
        """The saga's data key, or ``None`` when it has none (erased or never created)."""
        with self._lock:
            stale = time.monotonic() - self._looked >= self.refresh_s
            if stale or saga_id not in self._wrapped:
                self.catch_up()
            wrapped = self._wrapped.get(saga_id)
            if wrapped is None:
                return None
            plain = self._plain.get(saga_id)
            if plain is None:
                try:
                    plain = self.keyring().unwrap(saga_id, wrapped)
                except DataKeyError:
                    if self._given:
                        raise
                    self._keyring = None  # the KEKs may have been rotated since we loaded them
                    plain = self.keyring().unwrap(saga_id, wrapped)
                self._plain[saga_id] = plain
            return plain

    def scope(self, saga_id: str) -> KeyScope:
        """A key scope for ``saga_id`` that looks its key up on first use."""
        return KeyScope(saga_id, resolve=lambda: self.key(saga_id))

    def saga_ids(self) -> list[str]:
        """Every saga that has a data key now."""
        with self._lock:
            self.catch_up()
            return sorted(self._wrapped)

    # -- writing ------------------------------------------------------------------

    def _writer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(client_producer_config(self.bootstrap_servers))
        return self._producer

    def _send(self, saga_id: str, value: bytes | None) -> None:
        failures: list[str] = []

        def delivered(err: object, _msg: object) -> None:
            if err is not None:
                failures.append(str(err))

        producer = self._writer()
        try:
            producer.produce(self.topic, value, saga_id.encode("utf-8"), on_delivery=delivered)
            left = producer.flush(self.timeout)
        except (KafkaException, BufferError) as exc:
            raise DataKeyError(f"cannot write to {self.topic}: {exc}") from exc
        if left or failures:
            why = failures[0] if failures else f"not acknowledged within {self.timeout:.0f}s"
            raise DataKeyError(f"the key record of saga {saga_id} was not written: {why}")

    def create(self, saga_id: str) -> bytes:
        """The saga's data key: the existing one, else a new one written (acked) first."""
        with self._lock:
            existing = self.key(saga_id)
            if existing is not None:
                return existing
            data_key = os.urandom(KEY_BYTES)
            value = self.keyring(create=True).wrap(saga_id, data_key)
            self._send(saga_id, value)
            self._wrapped[saga_id] = value
            self._plain[saga_id] = data_key
            return data_key

    def erase(self, saga_id: str) -> bool:
        """Destroy the saga's data key (a tombstone); ``False`` when it had none."""
        with self._lock:
            self.catch_up()
            had = saga_id in self._wrapped
            self._send(saga_id, None)
            self._wrapped.pop(saga_id, None)
            self._plain.pop(saga_id, None)
            return had

    def rewrap(self, ring: Keyring, saga_ids: Iterable[str] | None = None) -> int:
        """Re-wrap every data key not yet wrapped by ``ring.current``; how many were."""
        with self._lock:
            self.catch_up()
            done = 0
            for saga_id in list(saga_ids) if saga_ids is not None else sorted(self._wrapped):
                wrapped = self._wrapped.get(saga_id)
                if wrapped is None or ring.wrapped_by(wrapped) == ring.current:
                    continue
                plain = ring.unwrap(saga_id, wrapped)
                value = ring.wrap(saga_id, plain)
                self._send(saga_id, value)
                self._wrapped[saga_id] = value
                done += 1
            self._keyring = ring
            return done

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
            if self._producer is not None:
                self._producer.flush(self.timeout)
                self._producer = None


_STORES: dict[tuple[str, str], DataKeyStore] = {}
_DEFAULT: list[tuple[str, str]] = []
_GUARD = threading.Lock()


def configure(settings: Settings) -> DataKeyStore:
    """The process's key store for ``settings`` (made the default; connects on first use)."""
    where = (settings.kafka_bootstrap_servers, keys_topic(settings.topics))
    with _GUARD:
        store = _STORES.get(where)
        if store is None:
            store = _STORES[where] = DataKeyStore(*where)
        _DEFAULT[:] = [where]
        return store


def default_store() -> DataKeyStore:
    """The store :func:`configure` set last, else one for ``Settings.from_env()``."""
    with _GUARD:
        where = _DEFAULT[0] if _DEFAULT else None
    if where is not None:
        return _STORES[where]
    return configure(Settings.from_env())


def encode_payload(
    settings: Settings, saga_id: str, model: BaseModel, *, create: bool = False
) -> Payload:
    """``to_payload(model)`` with the saga's data key in scope when ``model`` has personal
    fields (``create``: make the key first, written and acknowledged, if the saga has none)."""
    if not has_personal(type(model)):
        return to_payload(model)
    store = configure(settings)
    scope = KeyScope(saga_id, store.create(saga_id)) if create else store.scope(saga_id)
    with saga_keys(scope):
        return to_payload(model)


def saga_scope(saga_id: str, store: DataKeyStore | None = None) -> KeyScope:
    """A lazy key scope for ``saga_id`` from ``store`` (default: the process's)."""
    if store is not None:
        return store.scope(saga_id)

    def resolve() -> bytes | None:
        return default_store().key(saga_id)

    return KeyScope(saga_id, resolve=resolve)
