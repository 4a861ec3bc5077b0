"""Schema names from configuration never become SQL text: a hostile name is refused with
one clear line, and what does reach SQL is quoted by ``psycopg.sql.Identifier``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from sagaline.consumers.db import quote_ident, quote_schema
from sagaline.consumers.errors import WorkerError
from sagaline.consumers.migrations import migrate
from sagaline.consumers.projections import list_sagas
from sagaline.consumers.store import WorkerStore
from sagaline.orchestrator.core.errors import ConfigError, SagalineError
from sagaline.sagas.tables import Tables, app_schema

pytestmark = pytest.mark.integration

HOSTILE = 'x"; DROP TABLE y; --'


def _canary(url: str, schema: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".y',)).fetchone()
    return row is not None and row[0] is not None


@pytest.fixture
def canary(database_url: str, pg_schema: str) -> str:
    """A table ``y`` that a successful injection would drop."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (v int)").format(sql.Identifier(pg_schema, "y")))
    return pg_schema


def test_hostile_schema_names_are_refused_everywhere(
    database_url: str, canary: str, pg_schema_url: str
) -> None:
    attempts: list[Callable[[], object]] = [
        lambda: migrate(pg_schema_url, HOSTILE),
        lambda: WorkerStore(HOSTILE),
        lambda: quote_schema(HOSTILE),
        lambda: list_sagas(pg_schema_url, schema=HOSTILE),
        lambda: app_schema(HOSTILE),
    ]
    for attempt in attempts:
        with pytest.raises((WorkerError, ConfigError, SagalineError)) as refused:
            attempt()
        message = str(refused.value)
        assert "\n" not in message and "schema" in message
    assert _canary(database_url, canary)


def test_hostile_names_that_reach_sql_are_quoted(database_url: str, canary: str) -> None:
    quoted = quote_ident(HOSTILE)
    assert quoted == '"x""; DROP TABLE y; --"'
    # a schema literally named so is created and dropped; nothing else happens
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {quoted}")
        found = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (HOSTILE,)
        ).fetchone()
        conn.execute(f"DROP SCHEMA {quoted}")
    assert found == (1,)
    assert _canary(database_url, canary)
    assert Tables(canary).orders == f'"{canary}"."orders"'


def test_the_command_line_refuses_a_hostile_schema_in_one_line(
    database_url: str, canary: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sagaline.orchestrator.cli", "sagas", "tables", "--schema", HOSTILE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid application schema" in lines[0]
    assert "Traceback" not in done.stderr
    assert _canary(database_url, canary)
