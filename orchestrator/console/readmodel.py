"""What the console reads from the PostgreSQL read model (read-only).

The projection (:mod:`sagaline.consumers.projections`) keeps one
``saga_status`` row per saga, with the folded :class:`SagaState` as its
``snapshot``, and one ``saga_timeline`` row per journal entry.  The console
lists sagas, counts them by status and finds open approvals there; a saga's
own page reads the journal itself (:mod:`sagaline.orchestrator.console.history`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from sagaline.consumers.db import connect, validate_schema
from sagaline.consumers.errors import DatabaseUnavailable
from sagaline.orchestrator.console.redact import payload_view
from sagaline.orchestrator.core.errors import SagalineError
from sagaline.schemas.codec import default_codec
from sagaline.schemas.state import SagaState

__all__ = [
    "AGES",
    "ApprovalItem",
    "ReadModel",
    "ReadModelError",
    "SagaFilter",
    "SagaRow",
]

#: the age filter's choices: label -> how far back a saga may have started
AGES: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
}
_REQUESTED_BY = re.compile(r"requested_by=([^,)]+)")
_LIMIT = 200


class ReadModelError(SagalineError):
    """The read model cannot be read (no projection yet, database down)."""


@dataclass(frozen=True)
class SagaFilter:
    """The saga list's filters (empty strings mean "any")."""

    saga_type: str = ""
    status: str = ""
    age: str = ""
    text: str = ""

    def where(self, *, with_status: bool = True) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.saga_type:
            clauses.append("saga_type = %s")
            params.append(self.saga_type)
        if self.status and with_status:
            clauses.append("status = %s")
            params.append(self.status)
        if self.age in AGES:
            clauses.append("started_at >= %s")
            params.append(datetime.now(UTC) - AGES[self.age])
        if self.text:
            clauses.append("saga_id ILIKE %s")
            params.append("%" + self.text.replace("%", r"\%").replace("_", r"\_") + "%")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@dataclass(frozen=True)
class SagaRow:
    """One saga of the list."""

    saga_id: str
    saga_type: str
    saga_version: int
    status: str
    current_step: str | None
    waiting_for: str | None
    started_at: datetime | None
    updated_at: datetime
    last_seq: int
    retries: int
    error: str | None


@dataclass(frozen=True)
class ApprovalItem:
    """One open approval: the saga, what it is about, who asked, how long it waited."""

    saga_id: str
    saga_type: str
    saga_version: int
    wait: str
    kind: str
    opened_at: datetime
    timeout_at: datetime | None
    requested_by: str | None
    data: Any
    tool: str | None = None
    tool_args: Any = None
    #: a bound approval's view (what the approver is shown) and its SHA-256
    shown: Any = None
    shown_sha256: str | None = None


class ReadModel:
    """Queries on one database and schema; every call opens a short autocommit connection."""

    def __init__(self, database_url: str, schema: str) -> None:
        self.database_url = database_url
        self.schema = validate_schema(schema)
        self._codec = default_codec()

    def _rows(self, sql: str, params: list[Any] | tuple[Any, ...]) -> list[Any]:
        try:
            with connect(self.database_url, autocommit=True) as conn:
                return conn.execute(sql.replace("{schema}", self.schema), params).fetchall()
        except psycopg.errors.UndefinedTable:
            raise ReadModelError(
                f"no read model in schema {self.schema!r} yet: is `sagaline projection run` "
                "running?"
            ) from None
        except psycopg.Error as exc:
            raise ReadModelError(f"reading the read model failed: {type(exc).__name__}") from None
        except DatabaseUnavailable as exc:  # says where, never the password
            raise ReadModelError(f"reading the read model failed: {exc}") from None

    def sagas(self, f: SagaFilter) -> list[SagaRow]:
        """Sagas matching ``f``, most recently updated first (at most 200)."""
        where, params = f.where()
        rows = self._rows(
            "SELECT saga_id, saga_type, saga_version, status, current_step, waiting_for,"
            " started_at, updated_at, last_seq, retries, error FROM {schema}.saga_status"
            f"{where} ORDER BY updated_at DESC, saga_id LIMIT {_LIMIT}",
            params,
        )
        return [SagaRow(*r) for r in rows]

    def counts(self, f: SagaFilter) -> dict[str, int]:
        """How many sagas match ``f`` (ignoring its status), by status."""
        where, params = f.where(with_status=False)
        rows = self._rows(
            f"SELECT status, count(*) FROM {{schema}}.saga_status{where} GROUP BY status",
            params,
        )
        return {str(r[0]): int(r[1]) for r in sorted(rows)}

    def saga_types(self) -> list[str]:
        rows = self._rows("SELECT DISTINCT saga_type FROM {schema}.saga_status ORDER BY 1", ())
        return [str(r[0]) for r in rows]

    def saga_type(self, saga_id: str) -> str | None:
        """The saga's type, if the read model has seen it."""
        rows = self._rows(
            "SELECT saga_type FROM {schema}.saga_status WHERE saga_id = %s", (saga_id,)
        )
        return str(rows[0][0]) if rows else None

    def last_seqs(self, saga_ids: list[str]) -> dict[str, int]:
        """The last journal seq the read model has applied, per saga."""
        rows = self._rows(
            "SELECT saga_id, last_seq FROM {schema}.saga_status WHERE saga_id = ANY(%s)",
            (saga_ids,),
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def approvals(self) -> list[ApprovalItem]:
        """Every open approval across sagas, oldest first."""
        rows = self._rows(
            "SELECT s.snapshot, t.events FROM {schema}.saga_status s"
            " LEFT JOIN {schema}.saga_timeline t ON t.saga_id = s.saga_id AND t.seq = 1"
            " WHERE s.waiting_for IS NOT NULL",
            (),
        )
        items: list[ApprovalItem] = []
        for snapshot, first_events in rows:
            state = self._codec.decode(bytes(snapshot), SagaState)
            asked = _requested_by(first_events)
            items.extend(_approvals_of(state, asked))
        return sorted(items, key=lambda i: (i.opened_at, i.saga_id))


def _requested_by(events: Any) -> str | None:
    """Who asked for the saga: the ``requested_by`` of its ``SagaStarted`` timeline line."""
    for line in events or []:
        if str(line).startswith("SagaStarted"):
            found = _REQUESTED_BY.search(str(line))
            return found.group(1).strip() if found else None
    return None


def _approvals_of(state: SagaState, requested_by: str | None) -> list[ApprovalItem]:
    data = payload_view(state.data)
    items = []
    for w in state.waits:
        if w.kind not in ("approval", "tool_approval"):
            continue
        agent = state.agents.get(w.agent) if w.agent else None
        items.append(
            ApprovalItem(
                saga_id=state.saga_id,
                saga_type=state.saga_type,
                saga_version=state.saga_version,
                wait=w.name,
                kind=w.kind,
                opened_at=w.opened_at,
                timeout_at=w.timeout_at,
                requested_by=(f"agent {w.agent}" if w.agent else requested_by),
                data=data,
                tool=agent.pending_tool if agent else None,
                tool_args=payload_view(agent.pending_args) if agent else None,
                shown=payload_view(w.shown) if w.shown is not None else None,
                shown_sha256=w.shown_sha256,
            )
        )
    return items
