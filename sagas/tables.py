"""Where the reference sagas keep their business tables, and how they are created.

The tables live in one PostgreSQL schema, the *application schema*:
``SAGALINE_APP_SCHEMA`` from the environment, else ``sagaline_app``.  Step
code reads it when it runs (so a test or the demo can point every process
at a schema of its own).  :func:`ensure_tables` applies ``schema.sql``
idempotently under an advisory lock, so several processes may run it at once;
the demo calls it, and ``sagaline sagas tables`` does it from a shell before
``sagaline worker run --app sagaline.sagas:REGISTRY``.

This module takes any DB-API-like connection (``conn.execute(sql, params)``),
so the saga modules do not import a database driver; the schema name, which comes
from configuration, is validated and then quoted by ``psycopg.sql.Identifier``
(:func:`quote_ident`) wherever it reaches SQL text.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from sagaline.orchestrator.core.errors import ConfigError

__all__ = [
    "APP_SCHEMA_ENV",
    "DEFAULT_APP_SCHEMA",
    "Tables",
    "app_schema",
    "create_tables",
    "ensure_tables",
    "quote_ident",
    "schema_sql",
]

APP_SCHEMA_ENV = "SAGALINE_APP_SCHEMA"
DEFAULT_APP_SCHEMA = "sagaline_app"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LOCK = "sagaline.sagas-schema"


def app_schema(explicit: str | None = None) -> str:
    """The application schema: ``explicit``, else ``$SAGALINE_APP_SCHEMA``, else the default."""
    name = explicit or os.environ.get(APP_SCHEMA_ENV) or DEFAULT_APP_SCHEMA
    if not _IDENTIFIER.match(name):
        raise ConfigError(
            f"invalid application schema {name!r}: use lower-case letters, digits and '_'"
        )
    return name


def quote_ident(*names: str) -> str:
    """``names`` as one dotted SQL identifier, quoted by ``psycopg.sql.Identifier``."""
    return sql.Identifier(*names).as_string(None)


@dataclass(frozen=True)
class Tables:
    """Qualified names of the reference sagas' tables in one schema."""

    schema: str

    @classmethod
    def current(cls) -> Tables:
        """The tables in :func:`app_schema`."""
        return cls(app_schema())

    @property
    def orders(self) -> str:
        return quote_ident(self.schema, "orders")

    @property
    def customers(self) -> str:
        return quote_ident(self.schema, "customers")

    @property
    def payments(self) -> str:
        return quote_ident(self.schema, "payments")

    @property
    def notifications(self) -> str:
        return quote_ident(self.schema, "notifications")

    @property
    def leads(self) -> str:
        return quote_ident(self.schema, "leads")

    @property
    def lead_batches(self) -> str:
        return quote_ident(self.schema, "lead_batches")

    @property
    def llm_calls(self) -> str:
        return quote_ident(self.schema, "llm_calls")

    @property
    def research_reports(self) -> str:
        return quote_ident(self.schema, "research_reports")


def schema_sql(schema: str) -> str:
    """The DDL of the reference sagas' tables in ``schema``."""
    text = Path(__file__).with_name("schema.sql").read_text(encoding="utf-8")
    return text.replace("{schema}", quote_ident(app_schema(schema)))


def ensure_tables(conn: Any, schema: str | None = None) -> str:
    """Create the tables in ``schema`` (default :func:`app_schema`) if missing; commit.

    ``conn`` is a psycopg connection (not in autocommit mode).  Returns the schema.
    """
    name = app_schema(schema)
    ddl = schema_sql(name)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK,))
        for statement in _statements(ddl):
            conn.execute(statement)
    return name


def _statements(ddl: str) -> list[str]:
    lines = [ln for ln in ddl.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def create_tables(schema: str | None = None, database_url: str | None = None) -> int:
    """``sagaline sagas tables [--schema NAME]``: create the tables in ``$DATABASE_URL``."""
    import psycopg

    from sagaline.orchestrator.config import Settings

    settings = Settings.from_env(database_url=database_url, require_database=True)
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        name = ensure_tables(conn, schema)
    print(f"reference saga tables ready in schema {name}")
    return 0
