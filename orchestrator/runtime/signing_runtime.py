"""Signing in sagaline's processes: which key signs, who may sign what, the producer hook.

Settings (environment, then the dev file; docs/security.md):

* ``SAGALINE_SIGNING`` — ``true`` to sign every record written and verify every
  command, reply, task and state record read (``sagaline dev up`` turns it on);
* ``SAGALINE_KEYS_DIR`` — the keyring (default ``keys`` beside the dev file);
* ``SAGALINE_SIGNER`` / ``SAGALINE_SIGNING_KEY`` — the name this process signs as
  (default: its role — ``orchestrator``, ``worker``, ``relay`` — or, for clients and
  the command line, its Kafka user) and its private key (default ``KEYS_DIR/NAME.key``);
* ``SAGALINE_ORCHESTRATOR_SIGNERS``, ``SAGALINE_REPLY_SIGNERS``,
  ``SAGALINE_COMMAND_SIGNERS``, ``SAGALINE_APPROVERS`` — who may sign what.

The private key's path is never logged; a missing key is one ``ConfigError`` line.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Producer

from sagaline.orchestrator.config import DEFAULT_KAFKA_USER, EnvSettings, dev_env_path
from sagaline.orchestrator.core.errors import ConfigError
from sagaline.orchestrator.runtime.errors import InputRejected
from sagaline.orchestrator.runtime.signing import (
    SIG_HEADER,
    SIGNER_HEADER,
    Keyring,
    SignatureError,
    Signer,
    load_signer,
    private_key_path,
    valid_name,
)

__all__ = [
    "SignedProducer",
    "SigningConfig",
    "WorkerProducer",
    "client_signer_name",
    "keyring",
    "reset_signing",
    "signer_for",
    "signing_config",
    "verify_record",
    "verify_task",
]

R = TypeVar("R")


@dataclass(frozen=True)
class SigningConfig:
    """Whether records are signed, where the keys are and who may sign what."""

    enabled: bool = False
    keys_dir: Path = Path(".sagaline/keys")
    signer: str | None = None
    signing_key: Path | None = field(default=None, repr=False)
    orchestrator_signers: frozenset[str] = frozenset({"orchestrator"})
    reply_signers: frozenset[str] = frozenset({"worker", "relay", "orchestrator"})
    command_signers: frozenset[str] = frozenset({"admin", "client", "console", "orchestrator"})
    approvers: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> SigningConfig:
        env = EnvSettings.load()
        return cls(
            enabled=env.signing,
            keys_dir=env.keys_dir or dev_env_path().parent / "keys",
            signer=env.signer,
            signing_key=env.signing_key,
            orchestrator_signers=frozenset(env.orchestrator_signers),
            reply_signers=frozenset(env.reply_signers),
            command_signers=frozenset(env.command_signers),
            approvers={k: frozenset(v) for k, v in env.approvers.items()},
        )

    def approvers_of(self, saga_type: str) -> frozenset[str]:
        """Who may approve a saga of ``saga_type``: its list, else ``*``'s, else the
        command signers."""
        found = self.approvers.get(saga_type, self.approvers.get("*"))
        return self.command_signers if found is None else found


_lock = threading.Lock()
_config: SigningConfig | None = None
_signers: dict[str, Signer] = {}
_keyring: tuple[int, Keyring] | None = None


def reset_signing() -> None:
    """Forget the resolved settings, keys and keyring (they are read again when next used)."""
    global _config, _keyring
    with _lock:
        _config = None
        _keyring = None
        _signers.clear()


def signing_config() -> SigningConfig:
    """This process's signing settings (resolved once)."""
    global _config
    with _lock:
        if _config is None:
            _config = SigningConfig.from_env()
        return _config


def client_signer_name() -> str:
    """The default signer of a client process: its Kafka user."""
    return EnvSettings.load().kafka_user or DEFAULT_KAFKA_USER


def signer_for(role: str) -> Signer | None:
    """The key this process signs with in ``role`` (``None`` when signing is off)."""
    config = signing_config()
    if not config.enabled:
        return None
    name = config.signer or role
    with _lock:
        cached = _signers.get(name)
    if cached is not None:
        return cached
    if not valid_name(name):
        raise ConfigError(f"SAGALINE_SIGNER {name!r} is not a signer name")
    path = config.signing_key or private_key_path(config.keys_dir, name)
    if not path.is_file():
        raise ConfigError(
            f"signing is on but signer {name!r} has no private key; run "
            f"`sagaline keys create {name}` (or set SAGALINE_SIGNING=false)"
        )
    try:
        signer = load_signer(path, name)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the private key of signer {name!r}: {type(exc).__name__}"
        ) from None
    with _lock:
        _signers[name] = signer
    return signer


def _mtime(directory: Path) -> int:
    try:
        return os.stat(os.fspath(directory)).st_mtime_ns  # on every record read: no pathlib
    except OSError:
        return -1


#: how long a keyring stays current before the directory is looked at again
_KEYRING_CHECK_S = 0.1
_checked_at = 0.0
_clock = time.monotonic


def keyring() -> Keyring:
    """The public keys of every signer, read again when the directory has changed (a key
    added by rotation, a ``.pub`` file removed by revocation): looked at no more than
    every 0.1 s (a worker verifies hundreds of records a second, from many threads).

    A directory changed less than a second ago is read again at every look: its
    modification time ticks coarsely, so a second change within one tick (a rotation
    writes two files) leaves the same stamp.
    """
    global _keyring, _checked_at
    now = _clock()
    cached = _keyring
    if cached is not None and now - _checked_at < _KEYRING_CHECK_S:
        return cached[1]
    directory = signing_config().keys_dir
    stamp = _mtime(directory)
    settled = time.time_ns() - stamp > 1_000_000_000
    with _lock:
        _checked_at = now
        cached = _keyring
        if cached is not None and cached[0] == stamp and settled:
            return cached[1]
    try:
        ring = Keyring.load(directory)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the keyring in {directory}: {exc}") from None
    with _lock:
        _keyring = (stamp, ring)
    return ring


def verify_record(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Any,
    allowed: frozenset[str],
    what: str,
) -> str | None:
    """The verified signer of a record read from ``topic``, or ``None`` when signing is off.

    Raises :class:`InputRejected` (``Unsigned``, ``UnknownSigner``, ``BadSignature``,
    ``WrongSigner``) with the reason.
    """
    if not signing_config().enabled:
        return None
    try:
        name = keyring().verify(topic, key, value, headers)
    except SignatureError as exc:
        raise InputRejected(exc.error_type, f"{what}: {exc.reason}") from None
    if name not in allowed:
        raise InputRejected(
            "WrongSigner", f"{what} signed by {name!r}, who may not sign it ({sorted(allowed)})"
        )
    return name


def _as_bytes(data: str | bytes | None) -> bytes | None:
    return data.encode("utf-8") if isinstance(data, str) else data


class SignedProducer(Producer):
    """A ``confluent_kafka.Producer`` that signs every record it produces with ``signer``
    (a :class:`Signer`, or a role whose key :func:`signer_for` finds; none when signing
    is off)."""

    def __init__(self, config: dict[str, Any], signer: Signer | str | None) -> None:
        super().__init__(config)
        #: a role name resolves to that role's key (``signer_for``)
        self.signer = signer_for(signer) if isinstance(signer, str) else signer

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        if self.signer is not None:
            value, key = _as_bytes(value), _as_bytes(key)
            signed = self.signer.headers(topic, key, value)
            if isinstance(headers, dict):
                headers = list(headers.items())
            kept = [(k, v) for k, v in headers or () if k not in (SIG_HEADER, SIGNER_HEADER)]
            headers = [*kept, *signed]
        # only what was given: librdkafka's binding reads ``callback=None`` as "no callback"
        given: dict[str, Any] = {"partition": partition, "timestamp": timestamp}
        if callback is not None or on_delivery is not None:
            given["on_delivery"] = on_delivery if on_delivery is not None else callback
        if headers is not None:
            given["headers"] = headers
        super().produce(topic, value, key, **given)


class WorkerProducer(SignedProducer):
    """A producer of the worker: signs as ``worker`` (or ``SAGALINE_SIGNER``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config, "worker")


class TaskRefused(InputRejected):
    """A task whose signature does not let it run (``refusal`` words the dead letter)."""

    refusal = "refused"


class Unsigned(TaskRefused):
    """A task without a signature."""


class UnknownSigner(TaskRefused):
    """A task signed by a key the keyring does not hold."""


class BadSignature(TaskRefused):
    """A task whose signature does not match its topic, key and value."""


class WrongSigner(TaskRefused):
    """A task signed by someone who may not write tasks."""


_TASK_REFUSALS: dict[str, type[TaskRefused]] = {
    c.__name__: c for c in (Unsigned, UnknownSigner, BadSignature, WrongSigner)
}


def verify_task(msg: Any, record: R) -> R:
    """``record``, the task ``msg`` carries, if an orchestrator signer signed it (always, when
    signing is off); else raise :class:`Unsigned`, :class:`UnknownSigner`,
    :class:`BadSignature` or :class:`WrongSigner` (their class name is the dead letter's
    error type)."""
    config = signing_config()
    if config.enabled:
        what = type(record).__name__
        topic, allowed = msg.topic() or "", config.orchestrator_signers
        try:
            verify_record(topic, msg.key(), msg.value(), msg.headers(), allowed, what)
        except InputRejected as exc:
            refusal = _TASK_REFUSALS.get(exc.error_type, TaskRefused)
            raise refusal(exc.error_type, exc.reason) from None
    return record
