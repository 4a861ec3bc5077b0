"""Connecting to PostgreSQL with clear errors, and validated, quoted schema names.

A schema name comes from configuration: it is first validated (a plain lower-case
identifier, else one clear error) and then only ever reaches SQL quoted by
``psycopg.sql.Identifier`` (:func:`quote_schema`), never as raw text.
"""

from __future__ import annotations

import logging
import re

import psycopg
from psycopg import conninfo, sql

from sagaline.consumers.errors import DatabaseUnavailable, WorkerError

__all__ = [
    "DEFAULT_SCHEMA",
    "connect",
    "connections_allowed",
    "describe_dsn",
    "is_connection_error",
    "quote_ident",
    "quote_schema",
    "validate_schema",
    "warn_if_pool_exceeds_server",
]

DEFAULT_SCHEMA = "sagaline"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_schema(name: str) -> str:
    """Return ``name`` if it is a safe, unquoted PostgreSQL identifier; raise otherwise."""
    if not _IDENTIFIER.match(name):
        raise WorkerError(
            f"invalid PostgreSQL schema name {name!r}: use lower-case letters, digits and '_'"
        )
    return name


def quote_ident(*names: str) -> str:
    """``names`` as one (dotted) SQL identifier, quoted by ``psycopg.sql.Identifier``."""
    return sql.Identifier(*names).as_string(None)


def quote_schema(name: str) -> str:
    """A configured schema name, validated and then quoted for SQL text."""
    return quote_ident(validate_schema(name))


def describe_dsn(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, without user or password."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    host = str(parts.get("host") or "localhost")
    port = str(parts.get("port") or "5432")
    dbname = str(parts.get("dbname") or "")
    return f"{host}:{port}/{dbname}"


def connect(dsn: str, *, autocommit: bool = False, connect_timeout: int = 5) -> psycopg.Connection:
    """Open a connection; an unreachable server raises :class:`DatabaseUnavailable`."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=connect_timeout)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(describe_dsn(dsn), reason) from exc


def is_connection_error(exc: BaseException, conn: psycopg.Connection | None = None) -> bool:
    """True when ``exc`` means the connection (not the statement) failed."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    if conn is not None and (conn.closed or conn.broken):
        return True
    return isinstance(exc, psycopg.OperationalError) and not isinstance(
        exc, psycopg.errors.QueryCanceled
    )


def connections_allowed(conn: psycopg.Connection) -> int:
    """How many connections the server takes in all, from clients like us: its
    ``max_connections`` less those reserved for superusers."""
    row = conn.execute(
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
    ).fetchone()
    return int(row[0]) if row else 0


def warn_if_pool_exceeds_server(pool_max: int, allowed: int, what: str) -> bool:
    """Log one warning when a pool may want more connections than the server takes."""
    if pool_max <= allowed:
        return False
    logging.getLogger("sagaline.worker").warning(
        "%s may hold up to %d PostgreSQL connections at once (a step on the outbox path holds"
        " one while it runs), but the server takes %d in all: steps beyond that wait for a"
        " connection; raise max_connections or lower --concurrency",
        what,
        pool_max,
        allowed,
    )
    return True
