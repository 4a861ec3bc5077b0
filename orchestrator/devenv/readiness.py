"""Wait until a Kafka cluster or a PostgreSQL server really serves requests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from sagaline.orchestrator.devenv.errors import StartupError
from sagaline.orchestrator.runtime.kafka_config import admin_config, transactional_producer_config
from sagaline.orchestrator.runtime.release import release

__all__ = ["wait_for_kafka", "wait_for_postgres"]

# Returns a reason when the process being waited for has died, else None.
LivenessCheck = Callable[[], str | None]


def _never_dead() -> str | None:
    return None


def wait_for_kafka(
    bootstrap_servers: str,
    *,
    expected_brokers: int = 1,
    timeout: float = 120.0,
    liveness: LivenessCheck = _never_dead,
    extra: Mapping[str, str] | None = None,
) -> float:
    """Block until ``expected_brokers`` are registered and a transactional producer initialises.

    ``extra`` (security keys) overrides what the process environment would add.
    Returns the seconds it took. Raises :class:`StartupError` on timeout or when
    ``liveness`` reports that the broker process died.
    """
    started = time.monotonic()
    deadline = started + timeout
    quiet: dict[str, Any] = {
        **admin_config(bootstrap_servers, extra={**(extra or {}), "log_level": 0}),
        "error_cb": _ignore,
    }
    # every client of a broker that may have just been SIGKILLed and restarted is let go
    # through release(): freeing one is a C call that can block for ever
    admin = [AdminClient(dict(quiet))]
    try:
        while True:
            _check(liveness, deadline, bootstrap_servers)
            try:
                metadata = admin[0].list_topics(timeout=2.0)
            except KafkaException:
                time.sleep(0.2)
                continue
            if len(metadata.brokers) >= expected_brokers:
                break
            time.sleep(0.2)
    finally:
        release(admin)
    while True:
        _check(liveness, deadline, bootstrap_servers)
        producer = [_ready_producer(bootstrap_servers, extra)]
        try:
            producer[0].init_transactions(max(1.0, min(30.0, deadline - time.monotonic())))
        except KafkaException:
            time.sleep(0.3)
            continue
        finally:
            release(producer)
        return time.monotonic() - started


def _ready_producer(bootstrap_servers: str, extra: Mapping[str, str] | None) -> Producer:
    return Producer(
        transactional_producer_config(
            bootstrap_servers,
            f"sagaline-devenv-ready-{uuid.uuid4().hex[:12]}",
            transaction_timeout_ms=10_000,
            extra={**(extra or {}), "log_level": 0, "error_cb": _ignore},
        )
    )


def wait_for_postgres(
    conninfo: str, *, timeout: float = 60.0, liveness: LivenessCheck = _never_dead
) -> float:
    """Block until ``SELECT 1`` succeeds on ``conninfo``; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        _check(liveness, deadline, conninfo)
        try:
            with psycopg.connect(conninfo, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return time.monotonic() - started
        except psycopg.OperationalError:
            time.sleep(0.2)


def _check(liveness: LivenessCheck, deadline: float, what: str) -> None:
    reason = liveness()
    if reason is not None:
        raise StartupError(reason)
    if time.monotonic() > deadline:
        raise StartupError(f"{what} did not become ready in time")


def _ignore(_error: object) -> None:
    return None
