"""Large payloads in PostgreSQL, content-addressed by sha256.

Implements the ``sagaline.schemas.payload.PayloadStore`` protocol (``put(bytes) ->
PayloadRef``, ``get(PayloadRef) -> bytes``).  Writing the same bytes twice
is a no-op, so a step retried after a crash stores nothing new.  Bound to a
step's connection (:meth:`PostgresPayloadStore.bound`), the bytes commit in
the same transaction as the reply that references them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool

from sagaline.consumers.db import DEFAULT_SCHEMA, validate_schema
from sagaline.consumers.errors import PayloadNotFound
from sagaline.schemas.base import PayloadRef

__all__ = ["PostgresPayloadStore"]


class PostgresPayloadStore:
    """Content-addressed bytes in ``{schema}.payloads``."""

    def __init__(
        self, source: psycopg.Connection | ConnectionPool, schema: str = DEFAULT_SCHEMA
    ) -> None:
        self._source = source
        self.schema = validate_schema(schema)

    def bound(self, conn: psycopg.Connection) -> PostgresPayloadStore:
        """The same store, writing through ``conn`` (inside its current transaction)."""
        return PostgresPayloadStore(conn, self.schema)

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        if isinstance(self._source, ConnectionPool):
            with self._source.connection() as conn:
                yield conn
        else:
            yield self._source

    def put(self, data: bytes) -> PayloadRef:
        """Store ``data`` (idempotent) and return its reference."""
        digest = hashlib.sha256(data).hexdigest()
        with self._conn() as conn:
            conn.execute(
                f"INSERT INTO {self.schema}.payloads (sha256, size, data) VALUES (%s, %s, %s)"
                " ON CONFLICT (sha256) DO NOTHING",
                (digest, len(data), data),
            )
        return PayloadRef(sha256=digest, size=len(data))

    def get(self, ref: PayloadRef) -> bytes:
        """The bytes of ``ref``; raises :class:`PayloadNotFound` when absent or corrupt."""
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT data FROM {self.schema}.payloads WHERE sha256 = %s", (ref.sha256,)
            ).fetchone()
        if row is None:
            raise PayloadNotFound(f"payload {ref.sha256} ({ref.size} bytes) is not stored")
        data = bytes(row[0])
        if hashlib.sha256(data).hexdigest() != ref.sha256:
            raise PayloadNotFound(f"payload {ref.sha256} is stored but its bytes do not match")
        return data
