"""Connection settings shared by every sagaline process.

Resolution order for each value: an explicit argument, then the process
environment (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``,
``SAGALINE_TOPIC_PREFIX``), then the file written by ``sagaline dev up``
(``.sagaline/dev.env`` under the current directory, or the path in
``SAGALINE_DEV_ENV``).

Kafka security comes the same way (see docs/security.md):

- ``SAGALINE_KAFKA_SECURITY_PROTOCOL``: ``SASL_SSL`` (what ``sagaline dev up`` writes) or
  ``PLAINTEXT`` (the default when nothing says otherwise, e.g. ``dev up --insecure``);
- ``SAGALINE_KAFKA_CA``: the CA certificate (PEM) that signed the brokers' certificates;
- ``SAGALINE_KAFKA_USER``: this process's principal (default ``admin``);
- ``SAGALINE_KAFKA_PASSWORD``: its password, or else its entry in the JSON file named by
  ``SAGALINE_KAFKA_CREDENTIALS`` (``{"user": "password", ...}``, owner-only).

PostgreSQL's password never sits in ``DATABASE_URL``: ``dev up`` writes a libpq
password file and names it in the URL (``?passfile=...``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from sagaline.orchestrator.core.errors import ConfigError

__all__ = [
    "DEFAULT_KAFKA_USER",
    "DEFAULT_TOPIC_PREFIX",
    "ENV_PREFIX",
    "KAFKA_SECURITY_KEYS",
    "EnvSettings",
    "KafkaSecurity",
    "KafkaValue",
    "Settings",
    "TopicNames",
    "dev_env_path",
    "is_secret_name",
    "kafka_security_from_env",
    "read_env_file",
    "read_kafka_config_file",
    "redact_url",
]

DEFAULT_TOPIC_PREFIX = "sagaline"
#: the one prefix of sagaline's environment variables (see :class:`EnvSettings`)
ENV_PREFIX = "SAGALINE_"
#: a librdkafka setting's value
KafkaValue = str | int | float | bool
DEFAULT_KAFKA_USER = "admin"
#: the variables that carry Kafka security (environment or dev file)
KAFKA_SECURITY_KEYS = (
    "SAGALINE_KAFKA_SECURITY_PROTOCOL",
    "SAGALINE_KAFKA_CA",
    "SAGALINE_KAFKA_USER",
    "SAGALINE_KAFKA_PASSWORD",
    "SAGALINE_KAFKA_CREDENTIALS",
)


def dev_env_path() -> Path:
    """Where ``sagaline dev up`` writes the connection settings."""
    explicit = os.environ.get("SAGALINE_DEV_ENV")
    if explicit:
        return Path(explicit)
    return Path.cwd() / ".sagaline" / "dev.env"


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a ``KEY=VALUE`` file (blank lines and ``#`` comments ignored)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class TopicNames:
    """The names of sagaline's topics under one prefix."""

    prefix: str = DEFAULT_TOPIC_PREFIX

    @property
    def commands(self) -> str:
        return f"{self.prefix}.commands"

    @property
    def replies(self) -> str:
        return f"{self.prefix}.replies"

    @property
    def tasks(self) -> str:
        return f"{self.prefix}.tasks"

    @property
    def state(self) -> str:
        return f"{self.prefix}.state"

    @property
    def journal(self) -> str:
        return f"{self.prefix}.journal"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.deadletter"

    @property
    def progress(self) -> str:
        """Advisory progress of running steps (short retention, never journaled)."""
        return f"{self.prefix}.progress"

    def all(self) -> tuple[str, ...]:
        return (
            self.commands,
            self.replies,
            self.tasks,
            self.state,
            self.journal,
            self.deadletter,
            self.progress,
        )


_SECRET = re.compile(r"password|passwd|secret|token|api[_-]?key", re.IGNORECASE)
_USAGE_COUNTERS = frozenset({"tokens_in", "tokens_out"})  # counts, not credentials
_MASK = "***"


def is_secret_name(name: str) -> bool:
    """Whether a field or parameter called ``name`` holds a secret (``password``,
    ``secret``, ``token``, ``api_key``, any case)."""
    return name not in _USAGE_COUNTERS and _SECRET.search(name) is not None


def redact_url(url: str) -> str:
    """``url`` with every password replaced by ``***`` (safe to print or log): the
    ``user:pass@`` part and secret-named query parameters of a URL, or the secret-named
    keys of a libpq ``key=value`` string; ``***`` alone if it cannot be parsed."""
    if "://" not in url:
        # psycopg only for a libpq string: a process that never parses one (the
        # orchestrator) does not import it at start
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:
            return _MASK
        if not any(is_secret_name(k) for k in params):
            return url
        return make_conninfo(
            "", **{k: _MASK if is_secret_name(k) else v for k, v in params.items()}
        )
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            port = f":{parts.port}" if parts.port else ""
            netloc = f"{parts.username or ''}:{_MASK}@{parts.hostname or ''}{port}"
            parts = parts._replace(netloc=netloc)
    except ValueError:
        return _MASK
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(is_secret_name(k) for k, _ in query):
        shown = [(k, _MASK if is_secret_name(k) else v) for k, v in query]
        parts = parts._replace(query="&".join(f"{k}={v}" for k, v in shown))  # for display
    return urlunsplit(parts)


@dataclass(frozen=True)
class KafkaSecurity:
    """How one process authenticates to Kafka: SASL/SCRAM-SHA-512 over TLS, or nothing."""

    protocol: str = "PLAINTEXT"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_location: str | None = None

    @property
    def secured(self) -> bool:
        return self.protocol.upper() != "PLAINTEXT"

    def client_config(self) -> dict[str, str]:
        """The librdkafka keys (empty for PLAINTEXT)."""
        if not self.secured:
            return {}
        config = {
            "security.protocol": self.protocol.upper(),
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": self.username or DEFAULT_KAFKA_USER,
            "sasl.password": self.password or "",
        }
        if self.ca_location:
            config["ssl.ca.location"] = self.ca_location
        return config

    def as_user(self, username: str, password: str) -> KafkaSecurity:
        """The same transport with another principal."""
        return KafkaSecurity(self.protocol, username, password, self.ca_location)


def kafka_security_from_env(
    env: dict[str, str] | None = None, *, user: str | None = None
) -> KafkaSecurity:
    """Resolve Kafka security from ``env`` (default: the process environment), then the
    dev file; ``user`` overrides ``SAGALINE_KAFKA_USER``."""
    file_values = read_env_file(dev_env_path())
    source = os.environ if env is None else env

    def pick(key: str) -> str | None:
        return source.get(key) or file_values.get(key) or None

    protocol = (pick("SAGALINE_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
    if protocol not in ("PLAINTEXT", "SASL_SSL", "SASL_PLAINTEXT"):
        raise ConfigError(
            f"SAGALINE_KAFKA_SECURITY_PROTOCOL={protocol} is not one of PLAINTEXT, SASL_SSL"
        )
    if protocol == "PLAINTEXT":
        return KafkaSecurity()
    username = user or pick("SAGALINE_KAFKA_USER") or DEFAULT_KAFKA_USER
    password = None if user else pick("SAGALINE_KAFKA_PASSWORD")
    if password is None:
        password = _password_from_file(pick("SAGALINE_KAFKA_CREDENTIALS"), username)
    return KafkaSecurity(protocol, username, password, pick("SAGALINE_KAFKA_CA"))


def _password_from_file(path: str | None, username: str) -> str:
    if not path:
        raise ConfigError(
            f"no Kafka password for {username}: set SAGALINE_KAFKA_PASSWORD "
            "or SAGALINE_KAFKA_CREDENTIALS (or run `sagaline dev up`)"
        )
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot read the Kafka credentials file {path}: {exc.__class__.__name__}"
        ) from None
    password = loaded.get(username) if isinstance(loaded, dict) else None
    if not isinstance(password, str) or not password:
        raise ConfigError(f"the Kafka credentials file {path} has no entry for {username}")
    return password


@dataclass(frozen=True)
class Settings:
    """Where Kafka and PostgreSQL are, and which topics to use."""

    kafka_bootstrap_servers: str
    #: left out of ``repr``: a URL someone wrote may carry a password
    database_url: str | None = field(default=None, repr=False)
    topics: TopicNames = field(default_factory=TopicNames)
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    #: librdkafka settings passed through to every client (``SAGALINE_KAFKA_CONFIG``,
    #: ``SAGALINE_KAFKA_CONFIG_FILE``; the command line adds ``--kafka-config``)
    kafka_config: Mapping[str, KafkaValue] = field(default_factory=dict, repr=False)

    def kafka_client_config(self) -> dict[str, str]:
        """The security keys every Kafka client of this process adds."""
        return self.kafka_security.client_config()

    @classmethod
    def from_env(
        cls,
        *,
        kafka_bootstrap_servers: str | None = None,
        database_url: str | None = None,
        topic_prefix: str | None = None,
        require_database: bool = False,
    ) -> Settings:
        """Resolve settings from arguments, the environment and the dev file."""
        env = EnvSettings.load()
        values = {
            "KAFKA_BOOTSTRAP_SERVERS": env.kafka_bootstrap_servers,
            "DATABASE_URL": env.database_url,
            "SAGALINE_TOPIC_PREFIX": env.topic_prefix,
        }

        def pick(arg: str | None, key: str) -> str | None:
            return arg or values.get(key) or None

        bootstrap = pick(kafka_bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            raise ConfigError(
                "KAFKA_BOOTSTRAP_SERVERS is not set; export it or run `sagaline dev up` first"
            )
        dsn = pick(database_url, "DATABASE_URL")
        if require_database and not dsn:
            raise ConfigError("DATABASE_URL is not set; export it or run `sagaline dev up` first")
        prefix = pick(topic_prefix, "SAGALINE_TOPIC_PREFIX") or DEFAULT_TOPIC_PREFIX
        return cls(
            kafka_bootstrap_servers=bootstrap,
            database_url=dsn,
            topics=TopicNames(prefix),
            kafka_security=kafka_security_from_env(),
            kafka_config=env.librdkafka_config(),
        )


def read_kafka_config_file(path: Path) -> dict[str, KafkaValue]:
    """librdkafka settings from a ``key=value`` file (``#`` comments, blank lines ignored)."""
    if not path.is_file():
        raise ConfigError(f"the Kafka config file {path} does not exist")
    return dict(read_env_file(path))


class EnvSettings(BaseSettings):
    """Every setting sagaline reads from the environment, validated in one place.

    Variables carry the prefix ``SAGALINE_`` (``SAGALINE_METRICS_PORT``, ...);
    ``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` are also read without it, and
    the OpenTelemetry variables keep their standard names.  The file written by
    ``sagaline dev up`` is read last (the environment wins).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore", frozen=True
    )

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "SAGALINE_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SAGALINE_DATABASE_URL", "DATABASE_URL")
    )
    topic_prefix: str = Field(default=DEFAULT_TOPIC_PREFIX, pattern=r"^[A-Za-z0-9._-]+$")
    #: librdkafka settings for every client, a JSON object: ``{"linger.ms": 5}``
    kafka_config: dict[str, KafkaValue] = {}
    #: a file of librdkafka ``key=value`` lines (``kafka_config`` wins over it)
    kafka_config_file: Path | None = None
    #: port of the Prometheus ``/metrics`` endpoint of a long-running process (0 = off)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_ca: str | None = None
    kafka_user: str | None = None
    kafka_password: SecretStr | None = None
    kafka_credentials: str | None = None
    kafka_log_level: int = Field(default=0, ge=0, le=7)
    #: Ed25519 signatures of commands, replies, tasks and state (docs/security.md)
    signing: bool = False
    #: the keyring directory (default: ``keys`` beside the dev file)
    keys_dir: Path | None = None
    #: the name this process signs as (default: its role, or the Kafka user for clients)
    signer: str | None = None
    #: this process's private key (default: ``KEYS_DIR/SIGNER.key``)
    signing_key: Path | None = None
    #: who may sign tasks and state records
    orchestrator_signers: list[str] = ["orchestrator"]
    #: who may sign replies (the processes that run steps)
    reply_signers: list[str] = ["worker", "relay", "orchestrator"]
    #: who may sign commands (start, signal, cancel, operator commands)
    command_signers: list[str] = ["admin", "client", "console", "orchestrator"]
    #: who may approve each saga type: ``{"refund": ["cfo"], "*": ["admin"]}``
    approvers: dict[str, list[str]] = {}
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
    )
    otel_service_name: str | None = Field(default=None, validation_alias="OTEL_SERVICE_NAME")

    @classmethod
    def load(cls, **overrides: Any) -> EnvSettings:
        """The environment, then the dev file; an invalid value is one ``ConfigError`` line."""
        try:
            return cls(_env_file=dev_env_path(), **overrides)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "settings"
            name = ENV_PREFIX + where.upper() if where.islower() else where
            raise ConfigError(f"invalid setting {name}: {first['msg']}") from None
        except SettingsError as exc:  # a complex value (dict, list) that is not JSON
            found = re.search(r'field "(\w+)"', str(exc))
            name = ENV_PREFIX + found.group(1).upper() if found else "a SAGALINE_ setting"
            raise ConfigError(f"invalid setting {name}: not valid JSON") from None

    def librdkafka_config(self) -> dict[str, KafkaValue]:
        """The passed-through librdkafka settings: the file's, then ``kafka_config``'s."""
        from_file = read_kafka_config_file(self.kafka_config_file) if self.kafka_config_file else {}
        return {**from_file, **self.kafka_config}
