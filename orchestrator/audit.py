"""Audit the journal: read it (and the worker inbox), then check every invariant.

The rules are pure and live in :mod:`sagaline.orchestrator.core.audit_rules`
(re-exported here); this module does the I/O: :func:`audit` reads the journal
topic with :func:`~sagaline.orchestrator.runtime.journal_reader.read_journal`
and, given a database URL, the worker inbox (:func:`read_inbox`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

import psycopg

from sagaline.orchestrator.core.audit_rules import (
    CHECKS,
    AuditReport,
    Finding,
    InboxRow,
    audit_entries,
    audit_inbox,
    audit_saga,
)
from sagaline.orchestrator.core.errors import OrchestratorError
from sagaline.orchestrator.runtime.journal_reader import Progress, read_journal
from sagaline.schemas.codec import RecordCodec

__all__ = [
    "CHECKS",
    "AuditError",
    "AuditReport",
    "Finding",
    "InboxRow",
    "audit",
    "audit_entries",
    "audit_inbox",
    "audit_saga",
    "read_inbox",
]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class AuditError(OrchestratorError):
    """The audit cannot run (for example the worker inbox cannot be read)."""


def read_inbox(database_url: str, schema: str, saga_ids: Iterable[str]) -> list[InboxRow]:
    """The inbox rows of ``saga_ids`` in ``schema`` (none when the table does not exist)."""
    if not _IDENTIFIER.match(schema):
        raise AuditError(f"invalid PostgreSQL schema name {schema!r}")
    ids = sorted(set(saga_ids))
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.inbox",)).fetchone()
            if exists is None or exists[0] is None:
                return []
            rows = conn.execute(
                f"SELECT idempotency_key, saga_id, kind, step, outcome FROM {schema}.inbox"
                " WHERE saga_id = ANY(%s) ORDER BY idempotency_key",
                (ids,),
            ).fetchall()
    except psycopg.Error as exc:
        raise AuditError(
            f"cannot read the worker inbox {schema}.inbox (--no-inbox skips it): {exc}"
        ) from exc
    return [InboxRow(str(r[0]), str(r[1]), str(r[2]), str(r[3]), r[4]) for r in rows]


def audit(
    bootstrap_servers: str,
    topic: str,
    *,
    since: datetime | None = None,
    saga_id: str | None = None,
    saga_type: str | None = None,
    database_url: str | None = None,
    db_schema: str = "sagaline",
    codec: RecordCodec | None = None,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> AuditReport:
    """Read the journal ``topic`` and audit it (and the worker inbox with ``database_url``)."""
    read = read_journal(
        bootstrap_servers,
        topic,
        since=since,
        saga_id=saga_id,
        saga_type=saga_type,
        codec=codec,
        progress=progress,
        timeout=timeout,
    )
    by_saga = read.by_saga()
    report = audit_entries(by_saga, topic=topic, undecodable=read.undecodable, since=since)
    if database_url:
        rows = read_inbox(database_url, db_schema, by_saga)
        report.inbox_rows = len(rows)
        report.findings.extend(audit_inbox(rows, by_saga))
    return report
