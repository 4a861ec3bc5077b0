"""librdkafka configuration for every sagaline Kafka client: the one place that
builds a ``confluent_kafka`` configuration (the product, the tools and the tests
all call these builders; ``extra`` adds or overrides keys).

All producers that write keyed sagaline records must use the same
partitioner so that a saga's commands, replies and state share a partition
number.  sagaline uses librdkafka's default, ``consistent_random``
(CRC32 of the key), set explicitly here; a producer on another client
library must choose the partition itself with
``sagaline.orchestrator.runtime.partitioner.partition_for``.

Every builder adds the process's Kafka security (``security.protocol``, ``sasl.*``,
``ssl.ca.location``) resolved like :class:`~sagaline.orchestrator.config.Settings`
(environment, then the dev file; see docs/security.md); keys in ``extra`` win, so a
caller may authenticate as another principal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from sagaline.orchestrator.config import kafka_security_from_env

__all__ = [
    "LOG_LEVEL_ENV",
    "PARTITIONER",
    "ConfigValue",
    "KafkaConfig",
    "admin_config",
    "client_producer_config",
    "group_consumer_config",
    "input_consumer_config",
    "reader_config",
    "security_config",
    "set_passthrough",
    "transactional_producer_config",
]

PARTITIONER = "consistent_random"

ConfigValue = str | int | float | bool | Callable[..., Any]
KafkaConfig = dict[str, ConfigValue]


#: librdkafka's own log lines (syslog levels 0-7) are off unless this variable
#: raises them (``sagaline --debug`` sets it to 7): errors reach sagaline as
#: exceptions and error callbacks, never as stray lines on stderr.
LOG_LEVEL_ENV = "SAGALINE_KAFKA_LOG_LEVEL"


def _log_level() -> int:
    raw = os.environ.get(LOG_LEVEL_ENV, "0")
    return max(0, min(7, int(raw))) if raw.strip().isdigit() else 0


def security_config() -> dict[str, str]:
    """This process's Kafka security keys (empty when the cluster is PLAINTEXT)."""
    return kafka_security_from_env().client_config()


def _security_unless_given(extra: Mapping[str, object] | None) -> dict[str, str]:
    return {} if extra and "security.protocol" in extra else security_config()


#: librdkafka settings this process passes through to every client (``--kafka-config``)
_PASSTHROUGH: dict[str, ConfigValue] = {}


def set_passthrough(config: Mapping[str, ConfigValue]) -> None:
    """Add ``config`` to every Kafka client this process builds from now on.

    These are the operator's settings (``--kafka-config``, ``SAGALINE_KAFKA_CONFIG``),
    so they win over sagaline's own and over a builder's ``extra``.
    """
    _PASSTHROUGH.clear()
    _PASSTHROUGH.update(config)


def _merge(base: KafkaConfig, extra: Mapping[str, ConfigValue] | None) -> KafkaConfig:
    merged: KafkaConfig = {"log_level": _log_level(), **base, **_security_unless_given(extra)}
    if extra:
        merged.update(extra)
    merged.update(_PASSTHROUGH)
    return merged


def transactional_producer_config(
    bootstrap_servers: str,
    transactional_id: str,
    *,
    linger_ms: float = 1.0,
    transaction_timeout_ms: int = 30_000,
    extra: Mapping[str, ConfigValue] | None = None,
) -> KafkaConfig:
    """The orchestrator's one transactional producer (stable ``transactional.id``)."""
    return _merge(
        {
            "bootstrap.servers": bootstrap_servers,
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "transaction.timeout.ms": transaction_timeout_ms,
            "partitioner": PARTITIONER,
            "compression.type": "lz4",
            # A transaction that starts right after a commit meets the coordinator
            # still writing the previous markers (CONCURRENT_TRANSACTIONS) and is
            # retried after retry.backoff.ms: librdkafka's 100 ms default would cap
            # back-to-back transactions at ~10/s. Start at 1 ms, back off to 100 ms.
            "retry.backoff.ms": 1,
            "retry.backoff.max.ms": 100,
        },
        extra,
    )


def input_consumer_config(
    bootstrap_servers: str,
    group_id: str,
    *,
    instance_id: str,
    fetch_wait_max_ms: int = 10,
    session_timeout_ms: int = 10_000,
    static_membership: bool = True,
    extra: Mapping[str, ConfigValue] | None = None,
) -> KafkaConfig:
    """The orchestrator's consumer of commands and replies.

    ``range`` assignment (eager) gives partition *p* of both co-partitioned
    input topics to the same member, which is what lets one process own the
    state partition *p*.  With ``static_membership`` the member id is the
    instance id (``group.instance.id``): a restarted instance takes its
    partitions back at once instead of waiting for the session timeout.
    """
    static: KafkaConfig = (
        {"group.instance.id": f"{group_id}-{instance_id}"} if static_membership else {}
    )
    return _merge(
        {
            **static,
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "client.id": f"{group_id}-{instance_id}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            "fetch.wait.max.ms": fetch_wait_max_ms,
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(500, session_timeout_ms // 5),
            # where a partition ends (past its commit markers): due timers wait for it
            "enable.partition.eof": True,
        },
        extra,
    )


def reader_config(
    bootstrap_servers: str,
    group_id: str,
    *,
    extra: Mapping[str, ConfigValue] | None = None,
) -> KafkaConfig:
    """An assign-based read_committed reader (restore, status, tests); commits nothing."""
    return _merge(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        },
        extra,
    )


def client_producer_config(
    bootstrap_servers: str,
    *,
    linger_ms: float = 0.0,
    extra: Mapping[str, ConfigValue] | None = None,
) -> KafkaConfig:
    """An idempotent, non-transactional producer (the client API)."""
    return _merge(
        {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "partitioner": PARTITIONER,
        },
        extra,
    )


def group_consumer_config(
    bootstrap_servers: str,
    group_id: str,
    *,
    client_id: str | None = None,
    fetch_wait_max_ms: int = 10,
    extra: Mapping[str, ConfigValue] | None = None,
) -> KafkaConfig:
    """A subscribed read_committed consumer that commits (or stores) offsets itself:
    the workers, the projection and the benchmarks' tails."""
    named: KafkaConfig = {"client.id": client_id} if client_id is not None else {}
    return _merge(
        {
            **named,
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": fetch_wait_max_ms,
        },
        extra,
    )


def admin_config(
    bootstrap_servers: str, *, extra: Mapping[str, str | int | float | bool] | None = None
) -> dict[str, str | int | float | bool]:
    """An ``AdminClient`` (topics, metadata)."""
    config: dict[str, str | int | float | bool] = {
        "log_level": _log_level(),
        "bootstrap.servers": bootstrap_servers,
        **_security_unless_given(extra),
    }
    config.update(extra or {})
    config.update({k: v for k, v in _PASSTHROUGH.items() if not callable(v)})
    return config
