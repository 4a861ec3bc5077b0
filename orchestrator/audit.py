"""Audit the journal: read it (and the worker inbox), then check every invariant.

The rules are pure and live in :mod:`sagaline.orchestrator.core.audit_rules`
(re-exported here); this module does the I/O: :func:`audit` reads the journal
topic with :func:`~sagaline.orchestrator.runtime.journal_reader.read_journal`
and, given a database URL, the worker inbox (:func:`read_inbox`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

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
from sagaline.orchestrator.runtime.journal_reader import JournalRead, Progress, read_journal
from sagaline.orchestrator.runtime.journal_signatures import (
    CHECK as SIGNATURE_CHECK,
)
from sagaline.orchestrator.runtime.journal_signatures import (
    DESCRIPTION as SIGNATURE_DESCRIPTION,
)
from sagaline.orchestrator.runtime.journal_signatures import (
    SignatureCheck,
    signature_check,
)
from sagaline.schemas.codec import RecordCodec

__all__ = [
    "CHECKS",
    "AuditError",
    "AuditReport",
    "Finding",
    "InboxRow",
    "SignedAuditReport",
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


@dataclass
class SignedAuditReport(AuditReport):
    """An :class:`AuditReport` that also says whether journal signatures were verified."""

    #: journal records whose signature was verified (``None``: not checked, signing off)
    signatures_checked: int | None = None
    #: why they were not checked
    signatures_skipped: str = "signing is off"

    @classmethod
    def of(cls, report: AuditReport, checked: int | None, skipped: str) -> SignedAuditReport:
        values = {f.name: getattr(report, f.name) for f in fields(report)}
        return cls(**values, signatures_checked=checked, signatures_skipped=skipped)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        failures = sum(1 for f in self.findings if f.check == SIGNATURE_CHECK)
        data["signatures_checked"] = self.signatures_checked
        if self.signatures_checked is not None:
            data["checks"][SIGNATURE_CHECK] = {
                "description": SIGNATURE_DESCRIPTION,
                "failures": failures,
            }
        return data

    def render(self) -> str:
        lines = super().render().split("\n")
        if self.signatures_checked is None:
            line = f"  (journal signatures not checked: {self.signatures_skipped})"
        else:
            failed = any(f.check == SIGNATURE_CHECK for f in self.findings)
            line = f"  {'FAIL' if failed else 'ok  '} {SIGNATURE_CHECK:<13} {SIGNATURE_DESCRIPTION}"
        lines.insert(2 + len(CHECKS), line)
        return "\n".join(lines)


def _signature_findings(
    check: SignatureCheck, read: JournalRead, by_saga: dict[str, Any], filtered: bool
) -> list[Finding]:
    """One finding per journal record (of the audited sagas, when filtered) whose
    signature did not verify."""
    seqs = {(r.partition, r.offset): r.entry.seq for r in read.records}
    found = []
    for problem in check.problems:
        if filtered and problem.key not in by_saga:
            continue  # a saga that --saga-id or --type left out
        where = (problem.partition, problem.offset)
        message = f"{problem.error_type}: {problem.reason} ({read.topic}[{where[0]}]@{where[1]})"
        found.append(Finding(SIGNATURE_CHECK, problem.key, seqs.get(where), message))
    return found


def _truncation_findings(read: JournalRead) -> list[Finding]:
    """One ``chain`` finding per partition whose log no longer starts at offset 0.

    The journal is kept forever (``retention.ms=-1``); records gone from its start were
    deleted (a changed retention, ``kafka-delete-records``), and whole sagas may have gone
    with them: an audit that found nothing wrong in what is left must not pass.
    """
    found = []
    for partition, start in sorted(read.start_offsets.items()):
        if start > 0:
            message = (
                f"{read.topic}[{partition}] starts at offset {start}, not 0: the records "
                "before it were deleted (retention.ms or delete-records), and the sagas "
                "they held cannot be audited; the journal topic must keep every record"
            )
            found.append(Finding("chain", None, None, message))
    return found


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
    signatures: bool = True,
) -> SignedAuditReport:
    """Read the journal ``topic`` and audit it (and the worker inbox with ``database_url``).

    With signing on (and ``signatures``), every journal record's signature is verified too.
    """
    check = signature_check(topic) if signatures else None
    read = read_journal(
        bootstrap_servers,
        topic,
        since=since,
        saga_id=saga_id,
        saga_type=saga_type,
        codec=codec,
        progress=progress,
        timeout=timeout,
        on_record=check,
    )
    by_saga = read.by_saga()
    plain = audit_entries(by_saga, topic=topic, undecodable=read.undecodable, since=since)
    if since is None and saga_id is None:  # one saga: its own chain says if it lost its start
        plain.findings.extend(_truncation_findings(read))
    skipped = "signing is off (SAGALINE_SIGNING)" if signatures else "--no-signatures"
    report = SignedAuditReport.of(plain, None if check is None else check.checked, skipped)
    if check is not None:
        filtered = saga_id is not None or saga_type is not None
        report.findings.extend(_signature_findings(check, read, by_saga, filtered))
    if database_url:
        rows = read_inbox(database_url, db_schema, by_saga)
        report.inbox_rows = len(rows)
        report.findings.extend(audit_inbox(rows, by_saga))
    return report
