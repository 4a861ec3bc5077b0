"""Connection settings shared by every sagaline process.

Resolution order for each value: an explicit argument, then the process
environment (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``,
``SAGALINE_TOPIC_PREFIX``), then the file written by ``sagaline dev up``
(``.sagaline/dev.env`` under the current directory, or the path in
``SAGALINE_DEV_ENV``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sagaline.orchestrator.core.errors import ConfigError

__all__ = ["DEFAULT_TOPIC_PREFIX", "Settings", "TopicNames", "dev_env_path", "read_env_file"]

DEFAULT_TOPIC_PREFIX = "sagaline"


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

    def all(self) -> tuple[str, ...]:
        return (self.commands, self.replies, self.tasks, self.state, self.journal, self.deadletter)


@dataclass(frozen=True)
class Settings:
    """Where Kafka and PostgreSQL are, and which topics to use."""

    kafka_bootstrap_servers: str
    database_url: str | None = None
    topics: TopicNames = field(default_factory=TopicNames)

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
        file_values = read_env_file(dev_env_path())

        def pick(arg: str | None, key: str) -> str | None:
            if arg:
                return arg
            return os.environ.get(key) or file_values.get(key) or None

        bootstrap = pick(kafka_bootstrap_servers, "KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            raise ConfigError(
                "KAFKA_BOOTSTRAP_SERVERS is not set; export it or run `sagaline dev up` first"
            )
        dsn = pick(database_url, "DATABASE_URL")
        if require_database and not dsn:
            raise ConfigError("DATABASE_URL is not set; export it or run `sagaline dev up` first")
        prefix = pick(topic_prefix, "SAGALINE_TOPIC_PREFIX") or DEFAULT_TOPIC_PREFIX
        return cls(kafka_bootstrap_servers=bootstrap, database_url=dsn, topics=TopicNames(prefix))
