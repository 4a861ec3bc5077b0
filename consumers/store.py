"""SQL for the inbox and the outbox, used inside the caller's transaction.

The inbox row is inserted *first* in a step's transaction: a concurrent
attempt of the same step execution (same idempotency key) blocks on that
insert until the first transaction ends, then either finds the recorded
reply (the first committed) or takes over (the first rolled back).  The
outbox row carrying the reply is written in the same transaction, and
``pg_notify`` wakes the relays when it commits.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import psycopg

from sagaline.consumers.db import DEFAULT_SCHEMA, quote_ident, validate_schema

__all__ = [
    "OUTBOX_SHARDS",
    "InboxClaim",
    "OutboxMessage",
    "RecordedReply",
    "WorkerStore",
    "shard_of",
]

#: Number of outbox shards; each shard is published by at most one relay at a time.
OUTBOX_SHARDS = 32

Kind = Literal["step", "compensate"]


def shard_of(key: bytes | None) -> int:
    """The outbox shard of a message key (CRC32 of the key, like the Kafka default partitioner)."""
    return zlib.crc32(key or b"") % OUTBOX_SHARDS


@dataclass(frozen=True)
class InboxClaim:
    """The identity of one step execution, written to the inbox."""

    idempotency_key: str
    saga_id: str
    saga_type: str
    kind: Kind
    step: str
    attempt: int
    task_id: str


@dataclass(frozen=True)
class RecordedReply:
    """The reply recorded by the transaction that completed a step execution."""

    outcome: str
    topic: str
    reply: bytes
    task_id: str
    attempt: int


@dataclass(frozen=True)
class OutboxMessage:
    """An outbox row as the relay reads it."""

    id: int
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str]


class WorkerStore:
    """Inbox and outbox statements for one schema; every method runs on the caller's connection."""

    def __init__(self, schema: str = DEFAULT_SCHEMA) -> None:
        self.schema = validate_schema(schema)
        # the schema reaches SQL only quoted by psycopg.sql.Identifier
        self._q = quote_ident(self.schema)
        self.channel = f"{self.schema}_outbox"

    # -- inbox -----------------------------------------------------------------

    def claim(self, conn: psycopg.Connection, claim: InboxClaim) -> bool:
        """Insert the inbox row; False when the key is already recorded.

        Blocks while another transaction holds an uncommitted row with the same
        key, so two attempts of one step never run their effects concurrently.
        """
        row = conn.execute(
            f"INSERT INTO {self._q}.inbox"
            " (idempotency_key, saga_id, saga_type, kind, step, attempt, task_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1",
            (
                claim.idempotency_key,
                claim.saga_id,
                claim.saga_type,
                claim.kind,
                claim.step,
                claim.attempt,
                claim.task_id,
            ),
        ).fetchone()
        return row is not None

    def recorded(self, conn: psycopg.Connection, idempotency_key: str) -> RecordedReply | None:
        """The reply recorded for ``idempotency_key`` (None if absent or not completed)."""
        row = conn.execute(
            f"SELECT outcome, reply_topic, reply, task_id, attempt FROM {self._q}.inbox"
            " WHERE idempotency_key = %s",
            (idempotency_key,),
        ).fetchone()
        if row is None or row[2] is None:
            return None
        return RecordedReply(
            outcome=str(row[0]),
            topic=str(row[1]),
            reply=bytes(row[2]),
            task_id=str(row[3]),
            attempt=int(row[4]),
        )

    def complete(
        self,
        conn: psycopg.Connection,
        idempotency_key: str,
        *,
        outcome: str,
        topic: str,
        reply: bytes,
    ) -> None:
        """Record the final reply of a claimed step execution."""
        conn.execute(
            f"UPDATE {self._q}.inbox SET outcome = %s, reply_topic = %s, reply = %s,"
            " completed_at = now() WHERE idempotency_key = %s",
            (outcome, topic, reply, idempotency_key),
        )

    # -- outbox ----------------------------------------------------------------

    def enqueue(
        self,
        conn: psycopg.Connection,
        *,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, str] | None = None,
        notify: bool = True,
    ) -> int:
        """Add a message to the outbox; relays are notified when the transaction commits."""
        shard = shard_of(key)
        row = conn.execute(
            f"INSERT INTO {self._q}.outbox (shard, topic, key, value, headers)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (shard, topic, key, value, json.dumps(dict(headers or {}))),
        ).fetchone()
        if notify:
            conn.execute("SELECT pg_notify(%s, %s)", (self.channel, str(shard)))
        assert row is not None
        return int(row[0])

    def unsent(
        self, conn: psycopg.Connection, shards: list[int], limit: int
    ) -> list[OutboxMessage]:
        """Unsent rows of ``shards`` in id order (visible = committed)."""
        rows = conn.execute(
            f"SELECT id, topic, key, value, headers FROM {self._q}.outbox"
            " WHERE sent_at IS NULL AND shard = ANY(%s) ORDER BY id LIMIT %s",
            (shards, limit),
        ).fetchall()
        return [
            OutboxMessage(
                id=int(r[0]),
                topic=str(r[1]),
                key=bytes(r[2]) if r[2] is not None else None,
                value=bytes(r[3]),
                headers={str(k): str(v) for k, v in dict(r[4] or {}).items()},
            )
            for r in rows
        ]

    def mark_sent(self, conn: psycopg.Connection, ids: list[int]) -> list[float]:
        """Mark published rows; the seconds each row waited since its insert."""
        if not ids:
            return []
        rows = conn.execute(
            f"UPDATE {self._q}.outbox SET sent_at = clock_timestamp() WHERE id = ANY(%s)"
            " RETURNING extract(epoch FROM sent_at - created_at)",
            (ids,),
        ).fetchall()
        return [float(r[0]) for r in rows]

    def unsent_count(self, conn: psycopg.Connection) -> int:
        """How many rows of every shard wait to be published."""
        row = conn.execute(f"SELECT count(*) FROM {self._q}.outbox WHERE sent_at IS NULL")
        found = row.fetchone()
        return int(found[0]) if found is not None else 0

    def delete_sent(
        self, conn: psycopg.Connection, shards: list[int], older_than_seconds: float
    ) -> int:
        """Delete rows of ``shards`` sent more than ``older_than_seconds`` ago."""
        cur = conn.execute(
            f"DELETE FROM {self._q}.outbox WHERE sent_at IS NOT NULL AND shard = ANY(%s)"
            " AND sent_at < clock_timestamp() - make_interval(secs => %s)",
            (shards, older_than_seconds),
        )
        return cur.rowcount
