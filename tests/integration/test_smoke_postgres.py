"""Smoke tests proving the session's PostgreSQL is real: transactions commit or roll back."""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.integration


def test_committed_rows_are_visible_to_others_and_rolled_back_rows_are_not(
    pg_schema_url: str, pg_schema: str
) -> None:
    with psycopg.connect(pg_schema_url) as writer, psycopg.connect(pg_schema_url) as reader:
        writer.execute("CREATE TABLE effects (key text PRIMARY KEY, value int NOT NULL)")
        writer.commit()

        with writer.transaction():
            writer.execute("INSERT INTO effects VALUES ('kept', 1)")
            # Not yet committed: the other session must not see it.
            assert reader.execute("SELECT count(*) FROM effects").fetchone() == (0,)
            reader.commit()

        with pytest.raises(RuntimeError, match="undo"), writer.transaction():
            writer.execute("INSERT INTO effects VALUES ('undone', 2)")
            raise RuntimeError("undo")

        rows = reader.execute("SELECT key, value FROM effects ORDER BY key").fetchall()
        schema = reader.execute("SELECT current_schema()").fetchone()

    assert rows == [("kept", 1)]
    assert schema == (pg_schema,)


def test_unique_violation_rolls_back_the_whole_transaction(pg_schema_url: str) -> None:
    with psycopg.connect(pg_schema_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE inbox (idempotency_key text PRIMARY KEY)")
        conn.execute("CREATE TABLE outbox (id serial PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO inbox VALUES ('step-1')")

        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("INSERT INTO outbox (body) VALUES ('reply')")
            conn.execute("INSERT INTO inbox VALUES ('step-1')")

        outbox = conn.execute("SELECT count(*) FROM outbox").fetchone()
    assert outbox == (0,)


def test_fresh_database_is_empty_and_separate(fresh_database_url: str, database_url: str) -> None:
    with psycopg.connect(fresh_database_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert name is not None and name[0] != database_url.rsplit("/", 1)[-1]
    assert tables == (0,)
