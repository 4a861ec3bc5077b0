"""Schema migrations for the worker tables, applied idempotently at start.

Each migration is a file ``NNNN_name.sql`` in this package; ``{schema}`` in
its text is replaced by the configured schema name.  :func:`migrate` applies
the missing ones in one transaction under a transaction-scoped advisory lock,
so several workers and relays may start at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from sagaline.consumers.db import (
    DEFAULT_SCHEMA,
    connect,
    describe_dsn,
    quote_ident,
    quote_schema,
    validate_schema,
)
from sagaline.consumers.errors import DatabaseUnavailable, MigrationError, SchemaTooNew

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "MigrationResult",
    "current_version",
    "migrate",
]

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_NAMESPACE = "sagaline.worker-migrations"


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    def render(self, schema: str) -> str:
        return self.sql.replace("{schema}", quote_schema(schema))


@dataclass(frozen=True)
class MigrationResult:
    """What :func:`migrate` did."""

    schema: str
    version: int
    applied: tuple[int, ...]


def _load() -> tuple[Migration, ...]:
    found: list[Migration] = []
    for entry in resources.files(__package__).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(
                Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8"))
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps, found {versions}")
    return tuple(found)


MIGRATIONS: tuple[Migration, ...] = _load()
LATEST_VERSION: int = MIGRATIONS[-1].version


def _version_table(schema: str) -> str:
    return quote_ident(schema, "schema_version")


def current_version(conn: psycopg.Connection, schema: str = DEFAULT_SCHEMA) -> int:
    """The applied worker-table version in ``schema`` (0 when none)."""
    schema = validate_schema(schema)
    exists = conn.execute("SELECT to_regclass(%s)", (_version_table(schema),)).fetchone()
    if exists is None or exists[0] is None:
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {_version_table(schema)}").fetchone()
    return int(row[0]) if row else 0


def migrate(target: str | psycopg.Connection, schema: str = DEFAULT_SCHEMA) -> MigrationResult:
    """Bring ``schema`` to :data:`LATEST_VERSION`; safe to call from many processes at once.

    ``target`` is a DSN or an open connection (not inside a transaction).
    Raises :class:`DatabaseUnavailable` when PostgreSQL cannot be reached and
    :class:`SchemaTooNew` when the database is ahead of this code.
    """
    schema = validate_schema(schema)
    if isinstance(target, str):
        with connect(target) as conn:
            return _migrate(conn, schema, describe_dsn(target))
    return _migrate(target, schema, "<connection>")


def _migrate(conn: psycopg.Connection, schema: str, where: str) -> MigrationResult:
    applied: list[int] = []
    try:
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))",
                (_LOCK_NAMESPACE, schema),
            )
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_schema(schema)}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_version_table(schema)} ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            found = current_version(conn, schema)
            if found > LATEST_VERSION:
                raise SchemaTooNew(schema, found, LATEST_VERSION)
            for migration in MIGRATIONS:
                if migration.version <= found:
                    continue
                conn.execute(migration.render(schema).encode())
                conn.execute(
                    f"INSERT INTO {_version_table(schema)} (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration.version)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(where, str(exc).strip() or type(exc).__name__) from exc
    except psycopg.Error as exc:
        raise MigrationError(
            f"applying worker migrations to schema {schema!r} failed: {exc}"
        ) from exc
    return MigrationResult(schema=schema, version=max([found, *applied]), applied=tuple(applied))
