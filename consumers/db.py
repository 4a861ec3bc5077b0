"""Connecting to PostgreSQL with clear errors, and validated, quoted schema names.

A schema name comes from configuration: it is first validated (a plain lower-case
identifier, else one clear error) and then only ever reaches SQL quoted by
``psycopg.sql.Identifier`` (:func:`quote_schema`), never as raw text.
"""

from __future__ import annotations

import re

import psycopg
from psycopg import conninfo, sql

from sagaline.consumers.errors import DatabaseUnavailable, WorkerError

__all__ = [
    "DEFAULT_SCHEMA",
    "connect",
    "describe_dsn",
    "is_connection_error",
    "quote_ident",
    "quote_schema",
    "validate_schema",
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
