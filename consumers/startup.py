"""Waiting for PostgreSQL and Kafka at start, with backoff, instead of exiting.

A worker or relay started while its database or brokers are down (a host
reboot, a rolling restart) waits and logs what it waits for, then starts;
it never exits for a transient outage.  A configuration error (bad
credentials, a database that does not exist) is not transient and is raised
at once.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from sagaline.consumers.db import connect, describe_dsn
from sagaline.consumers.errors import DatabaseUnavailable
from sagaline.orchestrator.runtime.kafka_config import admin_config

__all__ = ["Backoff", "wait_for_database", "wait_for_kafka"]

log = logging.getLogger("sagaline.startup")

#: SQLSTATE classes that no wait will fix: invalid authorization (28), invalid catalog (3D)
_PERMANENT_SQLSTATE = ("28", "3D")


class Backoff:
    """Exponential backoff from ``first`` to ``cap`` seconds."""

    def __init__(self, first: float = 0.5, cap: float = 10.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def next(self) -> float:
        """The delay to wait now (and double the next one, up to ``cap``)."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.cap)
        return delay


def _permanent(exc: DatabaseUnavailable) -> bool:
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in _PERMANENT_SQLSTATE:
        return True
    text = exc.reason.lower()
    return "password authentication failed" in text or (
        "database" in text and "does not exist" in text
    )


def wait_for_database(dsn: str, stop: threading.Event, *, backoff: Backoff | None = None) -> bool:
    """Wait until PostgreSQL at ``dsn`` accepts a connection; ``False`` if ``stop`` was set.

    Raises :class:`DatabaseUnavailable` at once for errors no wait can fix
    (authentication, a missing database).
    """
    delays = backoff or Backoff()
    where = describe_dsn(dsn)
    while not stop.is_set():
        try:
            with connect(dsn, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            return True
        except DatabaseUnavailable as exc:
            if _permanent(exc):
                raise
            delay = delays.next()
            log.warning(
                "waiting for PostgreSQL at %s (%s); retrying in %.1fs", where, exc.reason, delay
            )
            stop.wait(delay)
        except psycopg.OperationalError as exc:
            delay = delays.next()
            log.warning("waiting for PostgreSQL at %s (%s); retrying in %.1fs", where, exc, delay)
            stop.wait(delay)
    return False


def wait_for_kafka(
    bootstrap_servers: str,
    stop: threading.Event,
    *,
    backoff: Backoff | None = None,
) -> bool:
    """Wait until a Kafka broker at ``bootstrap_servers`` answers; ``False`` if ``stop`` was set."""
    delays = backoff or Backoff()
    admin = AdminClient(admin_config(bootstrap_servers))
    while not stop.is_set():
        started = time.monotonic()
        try:
            metadata = admin.list_topics(timeout=5.0)
            if metadata.brokers:
                return True
            reason = "no broker in the metadata"
        except KafkaException as exc:
            reason = str(exc.args[0]) if exc.args else str(exc)
        delay = max(0.0, delays.next() - (time.monotonic() - started))
        log.warning(
            "waiting for Kafka at %s (%s); retrying in %.1fs", bootstrap_servers, reason, delay
        )
        stop.wait(delay)
    return False
