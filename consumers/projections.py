"""The saga read model: a journal consumer that keeps ``saga_status`` in PostgreSQL.

:class:`JournalProjection` is a consumer group on the journal topic.  For each
batch it folds the new entries onto each saga's stored snapshot and, in **one
PostgreSQL transaction**, upserts ``saga_status``, appends ``saga_timeline``
rows and records the next offset of every partition it consumed in
``projection_offsets``.  It never commits offsets to Kafka: on assignment it
seeks to the offsets stored in PostgreSQL, so a crash anywhere replays at
most the uncommitted batch, and a replayed entry is recognised by its
``seq`` (``seq <= last_seq`` is skipped).  A batch whose stored offsets moved
under it (another member took the partition over) is rolled back and the
partition is re-seeked, so a zombie member cannot write stale rows.

Tables: ``consumers/migrations/0002_read_model.sql`` (applied by
:func:`sagaline.consumers.migrations.migrate`).  :func:`list_sagas`,
:func:`get_saga` and :func:`get_timeline` read them (``sagaline list`` and
``sagaline status``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from sagaline.consumers.db import DEFAULT_SCHEMA, connect, quote_schema, validate_schema
from sagaline.consumers.errors import WorkerError
from sagaline.consumers.migrations import migrate
from sagaline.orchestrator.core.fold import fold
from sagaline.orchestrator.core.timeline import describe_event, describe_input
from sagaline.orchestrator.runtime.kafka_config import group_consumer_config
from sagaline.orchestrator.runtime.stable_read import (
    ReadToEndError,
    stable_offsets,
    topic_partitions,
)
from sagaline.schemas.base import Record
from sagaline.schemas.codec import RecordCodec, default_codec
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.state import SagaState

__all__ = [
    "DEFAULT_PROJECTION",
    "JournalProjection",
    "ProjectionError",
    "ProjectionStats",
    "SagaStatusRow",
    "TimelineRow",
    "apply_batch",
    "get_saga",
    "get_timeline",
    "list_sagas",
]

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Record)

#: default projection name: the consumer group id and the key of its stored offsets
DEFAULT_PROJECTION = "sagaline-projection"


class ProjectionError(WorkerError):
    """The read model cannot be built or read."""


class _Fenced(Exception):
    """The stored offsets moved under this batch: another member owns the partition."""


@dataclass
class ProjectionStats:
    """Counters of one projection run."""

    batches: int = 0
    applied: int = 0
    skipped: int = 0
    undecodable: int = 0
    fenced: int = 0


@dataclass(frozen=True)
class SagaStatusRow:
    """One saga in the read model."""

    saga_id: str
    saga_type: str
    saga_version: int
    status: str
    current_step: str | None
    waiting_for: str | None
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    last_seq: int
    attempts: int
    retries: int
    llm_calls: int
    tokens_in: int
    tokens_out: int
    cost_micros: int
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            data[key] = value.isoformat() if isinstance(value, datetime) else value
        return data


@dataclass(frozen=True)
class TimelineRow:
    """One journal entry of a saga, as stored by the projection."""

    seq: int
    at: datetime
    input_type: str | None
    input: str
    events: list[str]


_COLUMNS = (
    "saga_id",
    "saga_type",
    "saga_version",
    "status",
    "current_step",
    "waiting_for",
    "started_at",
    "updated_at",
    "finished_at",
    "last_seq",
    "attempts",
    "retries",
    "llm_calls",
    "tokens_in",
    "tokens_out",
    "cost_micros",
    "error",
)
_STATUS_COLUMNS = ", ".join(_COLUMNS)
_UPSERT_SET = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*_COLUMNS[1:], "snapshot"))


@dataclass
class _Saga:
    state: SagaState | None
    last_seq: int
    error: str | None
    dirty: bool = False


@dataclass
class _Batch:
    """Decoded records of one poll, with the next offset per partition."""

    records: list[tuple[int, int, JournalEntry]] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    undecodable: int = 0


def _error_of(state: SagaState) -> str | None:
    if state.status in ("failed", "compensated", "cancelled", "compensating"):
        return state.outcome_reason or state.compensation_reason
    errors = [st.last_error for st in state.steps.values() if st.last_error]
    return errors[-1] if errors else None


def _status_params(saga: _Saga, codec: RecordCodec) -> tuple[Any, ...]:
    s = saga.state
    assert s is not None
    return (
        s.saga_id,
        s.saga_type,
        s.saga_version,
        s.status,
        s.node,
        ",".join(w.name for w in s.waits) or None,
        s.started_at,
        s.updated_at,
        s.finished_at,
        saga.last_seq,
        s.attempts_retired + sum(st.attempt for st in s.steps.values()),
        s.retries_used,
        s.usage.llm_calls,
        s.usage.tokens_in,
        s.usage.tokens_out,
        s.usage.cost_micros,
        saga.error or _error_of(s),
        codec.encode(s),
    )


def _decoded(codec: RecordCodec, data: bytes, expected: type[R]) -> R:
    record = codec.decode(data, (expected,))
    if not isinstance(record, expected):
        raise TypeError(f"decoded a {type(record).__name__}, expected a {expected.__name__}")
    return record


def _load(
    conn: psycopg.Connection, schema: str, saga_ids: Sequence[str], codec: RecordCodec
) -> dict[str, _Saga]:
    rows = conn.execute(
        f"SELECT saga_id, last_seq, error, snapshot FROM {quote_schema(schema)}.saga_status"
        " WHERE saga_id = ANY(%s) FOR UPDATE",
        (list(saga_ids),),
    ).fetchall()
    return {
        str(r[0]): _Saga(_decoded(codec, bytes(r[3]), SagaState), int(r[1]), r[2]) for r in rows
    }


def _fold_entry(saga: _Saga, entry: JournalEntry) -> None:
    if entry.seq != saga.last_seq + 1:
        saga.error = f"journal gap: seq {saga.last_seq + 1}..{entry.seq - 1} not seen"
    try:
        state = fold(entry.events, saga.state)
    except Exception as exc:  # a journal that does not fold is reported in the row
        saga.error = f"seq {entry.seq}: {exc}"
        state = saga.state
    if state is not None:
        saga.state = state.model_copy(update={"journal_seq": entry.seq, "journal_hash": entry.hash})
    saga.last_seq = entry.seq
    saga.dirty = True


def _check_offsets(
    conn: psycopg.Connection,
    schema: str,
    projection: str,
    topic: str,
    expected: dict[int, int | None],
) -> None:
    rows = conn.execute(
        f"SELECT partition, next_offset FROM {quote_schema(schema)}.projection_offsets"
        " WHERE projection = %s AND topic = %s AND partition = ANY(%s) FOR UPDATE",
        (projection, topic, sorted(expected)),
    ).fetchall()
    stored = {int(r[0]): int(r[1]) for r in rows}
    for partition, position in expected.items():
        if stored.get(partition) != position:
            raise _Fenced(f"{topic}[{partition}]: stored {stored.get(partition)}, had {position}")


def _timeline_row(entry: JournalEntry) -> tuple[Any, ...]:
    return (
        entry.envelope.saga_id,
        entry.seq,
        entry.envelope.occurred_at,
        entry.input_type,
        describe_input(entry),
        json.dumps([describe_event(e) for e in entry.events]),
    )


def apply_batch(
    conn: psycopg.Connection,
    schema: str,
    records: Iterable[tuple[int, int, JournalEntry]],
    *,
    projection: str,
    topic: str,
    next_offsets: dict[int, int],
    expected: dict[int, int | None] | None = None,
    codec: RecordCodec | None = None,
) -> tuple[int, int]:
    """Fold ``records`` (partition, offset, entry) into the read model in ``conn``'s
    open transaction and store ``next_offsets``; returns ``(applied, skipped)``.

    ``expected`` (partition → next offset this member believes is stored, None
    for none) fences zombies: a mismatch raises before anything is written.
    """
    codec = codec or default_codec()
    batch = list(records)
    if expected is not None:
        _check_offsets(conn, schema, projection, topic, expected)
    sagas = _load(conn, schema, sorted({e.envelope.saga_id for _, _, e in batch}), codec)
    applied = skipped = 0
    timeline: list[tuple[Any, ...]] = []
    for _, _, entry in batch:
        saga = sagas.setdefault(entry.envelope.saga_id, _Saga(None, 0, None))
        if entry.seq <= saga.last_seq:
            skipped += 1
            continue
        _fold_entry(saga, entry)
        applied += 1
        timeline.append(_timeline_row(entry))
    with conn.cursor() as cur:
        rows = [_status_params(s, codec) for s in sagas.values() if s.dirty and s.state]
        if rows:
            cur.executemany(
                f"INSERT INTO {quote_schema(schema)}.saga_status ({_STATUS_COLUMNS}, snapshot)"
                f" VALUES ({', '.join(['%s'] * (len(_COLUMNS) + 1))})"
                f" ON CONFLICT (saga_id) DO UPDATE SET {_UPSERT_SET}",
                rows,
            )
        if timeline:
            cur.executemany(
                f"INSERT INTO {quote_schema(schema)}.saga_timeline"
                " (saga_id, seq, at, input_type, input, events)"
                " VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT DO NOTHING",
                timeline,
            )
        if next_offsets:
            cur.executemany(
                f"INSERT INTO {quote_schema(schema)}.projection_offsets"
                " (projection, topic, partition, next_offset) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (projection, topic, partition)"
                " DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
                [(projection, topic, p, o) for p, o in sorted(next_offsets.items())],
            )
    return applied, skipped


class JournalProjection:
    """Keeps the read model from the journal topic (one member of a consumer group)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        database_url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        projection: str = DEFAULT_PROJECTION,
        batch_size: int = 500,
        codec: RecordCodec | None = None,
        instance_id: str | None = None,
    ) -> None:
        """``instance_id`` makes this member static (``group.instance.id``): restarted
        under the same id, it takes its partitions back without a rebalance."""
        self.bootstrap_servers = bootstrap_servers
        self.instance_id = instance_id
        self.topic = topic
        self.database_url = database_url
        self.schema = validate_schema(schema)
        self.projection = projection
        self.batch_size = batch_size
        self.codec = codec or default_codec()
        self.stats = ProjectionStats()
        #: partition -> next offset stored in PostgreSQL (None: nothing stored yet)
        self._positions: dict[int, int | None] = {}
        self._conn: psycopg.Connection | None = None
        self._consumer: Consumer | None = None

    # -- lifecycle ----------------------------------------------------------------

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        until_caught_up: bool = False,
        timeout: float | None = None,
    ) -> ProjectionStats:
        """Project until ``stop`` is set (or, with ``until_caught_up``, until every
        partition reached the end offsets seen at start); ``timeout`` bounds the run."""
        migrate(self.database_url, self.schema)
        stop = stop or threading.Event()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._conn = connect(self.database_url)
        self._consumer = Consumer(self._consumer_config())
        try:
            self._consumer.subscribe(
                [self.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            ends = self._end_offsets() if until_caught_up else {}
            while not stop.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    raise ProjectionError(
                        f"projection of {self.topic} did not catch up within {timeout}s"
                    )
                self._poll_once()
                if until_caught_up and self._caught_up(ends):
                    break
        finally:
            self._consumer.close()
            self._conn.close()
        return self.stats

    def _consumer_config(self) -> dict[str, Any]:
        """Cooperative-sticky assignment (a member joining or leaving moves only the
        partitions that change owner; the others keep flowing), static membership with
        an instance id.  Overlapping owners during a handover are safe: a batch commits
        only from the position stored in PostgreSQL (``_Fenced`` otherwise)."""
        extra: dict[str, Any] = {"partition.assignment.strategy": "cooperative-sticky"}
        if self.instance_id is not None:
            extra["group.instance.id"] = f"{self.projection}-{self.instance_id}"
        return dict(
            group_consumer_config(
                self.bootstrap_servers, self.projection, fetch_wait_max_ms=50, extra=extra
            )
        )

    def _end_offsets(self) -> dict[int, int]:
        """The last stable offset of every non-empty partition, as of now."""
        assert self._consumer is not None
        try:
            partitions = topic_partitions(self._consumer, self.topic)
        except ReadToEndError:
            raise ProjectionError(f"journal topic {self.topic!r} does not exist") from None
        offsets = stable_offsets(self._consumer, self.topic, partitions)
        return {p: high for p, (low, high) in offsets.items() if high > low}

    def _caught_up(self, ends: dict[int, int]) -> bool:
        assert self._consumer is not None
        if not ends:
            return True
        assigned = {tp.partition for tp in self._consumer.assignment()}
        if not set(ends) <= assigned:
            return False
        positions = self._consumer.position([TopicPartition(self.topic, p) for p in ends])
        return all(tp.offset >= ends[tp.partition] for tp in positions)

    # -- rebalance ------------------------------------------------------------------

    def _stored_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        assert self._conn is not None
        with self._conn.transaction():
            rows = self._conn.execute(
                f"SELECT partition, next_offset FROM {quote_schema(self.schema)}.projection_offsets"
                " WHERE projection = %s AND topic = %s AND partition = ANY(%s)",
                (self.projection, self.topic, sorted(partitions)),
            ).fetchall()
        return {int(r[0]): int(r[1]) for r in rows}

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self._stored_offsets(tp.partition for tp in partitions)
        for tp in partitions:
            tp.offset = stored.get(tp.partition, OFFSET_BEGINNING)
            self._positions[tp.partition] = stored.get(tp.partition)
        consumer.incremental_assign(partitions)  # cooperative: only the added partitions
        log.info("projection %s assigned %s from %s", self.projection, self.topic, stored)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._positions.pop(tp.partition, None)
        if partitions:
            consumer.incremental_unassign(partitions)

    # -- batches --------------------------------------------------------------------

    def _decode(self, messages: list[Message]) -> _Batch:
        batch = _Batch()
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise ProjectionError(f"reading {self.topic}: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    # e.g. the journal topic does not exist yet: keep polling
                    log.warning("projection %s: %s", self.projection, err)
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if partition not in self._positions:
                continue  # revoked meanwhile
            batch.next_offsets[partition] = offset + 1
            value = msg.value()
            try:
                if value is None:
                    raise ValueError("null value")
                entry = _decoded(self.codec, value, JournalEntry)
            except Exception as exc:  # skipped and counted; the audit reports it
                log.warning(
                    "%s[%d]@%d is not a journal entry: %s", self.topic, partition, offset, exc
                )
                batch.undecodable += 1
                continue
            batch.records.append((partition, offset, entry))
        return batch

    def _poll_once(self) -> None:
        assert self._consumer is not None and self._conn is not None
        messages = self._consumer.consume(num_messages=self.batch_size, timeout=0.2)
        if not messages:
            return
        batch = self._decode(messages)
        if not batch.next_offsets:
            return
        expected = {p: self._positions.get(p) for p in batch.next_offsets}
        try:
            with self._conn.transaction():
                applied, skipped = apply_batch(
                    self._conn,
                    self.schema,
                    batch.records,
                    projection=self.projection,
                    topic=self.topic,
                    next_offsets=batch.next_offsets,
                    expected=expected,
                    codec=self.codec,
                )
        except _Fenced as exc:
            self.stats.fenced += 1
            log.warning("projection batch dropped, re-seeking: %s", exc)
            self._reseek(list(batch.next_offsets))
            return
        self._positions.update(batch.next_offsets)
        self.stats.batches += 1
        self.stats.applied += applied
        self.stats.skipped += skipped
        self.stats.undecodable += batch.undecodable

    def _reseek(self, partitions: list[int]) -> None:
        assert self._consumer is not None
        stored = self._stored_offsets(partitions)
        for p in partitions:
            self._positions[p] = stored.get(p)
            offset = stored.get(p, OFFSET_BEGINNING)
            self._consumer.seek(TopicPartition(self.topic, p, offset))


# -- readers ---------------------------------------------------------------------------


def _row(r: Sequence[Any]) -> SagaStatusRow:
    return SagaStatusRow(*r)


def _missing_table(exc: psycopg.Error) -> bool:
    return isinstance(exc, psycopg.errors.UndefinedTable)


def _query(database_url: str, sql: str, params: Sequence[Any], schema: str) -> list[Any]:
    try:
        with connect(database_url, autocommit=True) as conn:
            return conn.execute(sql.replace("{schema}", quote_schema(schema)), params).fetchall()
    except psycopg.Error as exc:
        if _missing_table(exc):
            raise ProjectionError(
                f"no read model in schema {schema!r}: run `sagaline projection run` first"
            ) from exc
        raise ProjectionError(f"reading the read model failed: {exc}") from exc


def list_sagas(
    database_url: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    saga_type: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[SagaStatusRow]:
    """Sagas in the read model, most recently updated first, filtered by type and status."""
    rows = _query(
        database_url,
        f"SELECT {_STATUS_COLUMNS} FROM {{schema}}.saga_status"
        " WHERE (%s::text IS NULL OR saga_type = %s) AND (%s::text IS NULL OR status = %s)"
        " ORDER BY updated_at DESC, saga_id LIMIT %s",
        (saga_type, saga_type, status, status, limit),
        schema,
    )
    return [_row(r) for r in rows]


def get_saga(
    database_url: str, saga_id: str, *, schema: str = DEFAULT_SCHEMA
) -> SagaStatusRow | None:
    """One saga's row (None when the read model has not seen it)."""
    rows = _query(
        database_url,
        f"SELECT {_STATUS_COLUMNS} FROM {{schema}}.saga_status WHERE saga_id = %s",
        (saga_id,),
        schema,
    )
    return _row(rows[0]) if rows else None


def get_timeline(
    database_url: str, saga_id: str, *, schema: str = DEFAULT_SCHEMA
) -> list[TimelineRow]:
    """One saga's stored timeline, in seq order."""
    rows = _query(
        database_url,
        "SELECT seq, at, input_type, input, events FROM {schema}.saga_timeline"
        " WHERE saga_id = %s ORDER BY seq",
        (saga_id,),
        schema,
    )
    return [TimelineRow(int(r[0]), r[1], r[2], str(r[3]), list(r[4])) for r in rows]
