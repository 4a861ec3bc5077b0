"""``sagaline replay``, ``audit``, ``list``, ``projection run`` (and ``status --from``).

* ``replay`` prints every saga's timeline from the journal; ``--strict``
  re-decides every recorded input with the current code and exits 1 on any
  divergence (a CI deploy gate).
* ``audit`` checks the journal's invariants (and the worker inbox when a
  database is configured) and exits 1 with a report when one fails.
* ``projection run`` keeps the PostgreSQL read model from the journal;
  ``list`` and ``status`` read it.

``status`` is registered by :mod:`sagaline.orchestrator.cli.orchestrator_cmds` (it
reads the state topic); this module adds ``--from {auto,read-model,state}``
to it: ``auto`` (the default) answers from the read model when a database
is configured and the read model knows the saga, else from the state topic.

Exit codes: 0 clean, 1 divergence or failed invariant, 2 error (bad input,
unknown saga id, missing topic or database).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from types import FrameType
from typing import Any

import psycopg

from sagaline.consumers.db import DEFAULT_SCHEMA, validate_schema
from sagaline.consumers.projections import (
    DEFAULT_PROJECTION,
    JournalProjection,
    ProjectionError,
    SagaStatusRow,
    get_saga,
    get_timeline,
    list_sagas,
)
from sagaline.orchestrator.audit import audit
from sagaline.orchestrator.cli.command import (
    EXIT_OK,
    Handler,
    Subparsers,
    add_json_flag,
    emit,
    parse_since,
    positive_int,
    set_handler,
)
from sagaline.orchestrator.cli.config_cmds import add_process_options, with_process_services
from sagaline.orchestrator.cli.progress_view import RecordProgress
from sagaline.orchestrator.client import KafkaUnavailable, SagaNotFound
from sagaline.orchestrator.config import Settings, dev_env_path, read_env_file
from sagaline.orchestrator.core.errors import ConfigError, OrchestratorError
from sagaline.orchestrator.core.timeline import render_timeline
from sagaline.orchestrator.replay import DEFAULT_DEFINITIONS, load_definitions, replay
from sagaline.orchestrator.runtime.metrics import LagMonitor

__all__ = ["EXIT_FAILED", "UnknownSagaId", "register"]

#: a divergence (replay --strict) or a failed invariant (audit)
EXIT_FAILED = 1

_STATUSES = (
    "running",
    "waiting",
    "paused",
    "compensating",
    "completed",
    "compensated",
    "failed",
    "cancelled",
)


class UnknownSagaId(OrchestratorError):
    """No saga with this id is known (exit code 2)."""


def _kafka_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: env / dev file)")
    parser.add_argument("--prefix", help="topic prefix (default: env or 'sagaline')")


def _database_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="PostgreSQL URL (default: env / dev file)")
    parser.add_argument(
        "--db-schema",
        default=DEFAULT_SCHEMA,
        help=f"schema of the worker and read-model tables (default {DEFAULT_SCHEMA})",
    )


def _journal_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--saga-id", help="only this saga")
    parser.add_argument("--type", dest="saga_type", help="only sagas of this type")
    parser.add_argument(
        "--since",
        type=parse_since,
        help="start at this time: ISO 8601 (UTC by default) or an age such as 30m, 2h, 7d",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="longest time to read the journal (s)"
    )


def register(subparsers: Subparsers) -> None:
    """Add ``replay``, ``audit``, ``list``, ``projection`` and ``status --from``."""
    _register_replay(subparsers)
    _register_audit(subparsers)
    lst = subparsers.add_parser("list", help="list sagas from the read model")
    lst.add_argument("--type", dest="saga_type", help="only sagas of this type")
    lst.add_argument("--status", choices=_STATUSES, help="only sagas in this status")
    lst.add_argument("--limit", type=positive_int, default=100, help="most rows (default 100)")
    _database_args(lst)
    add_json_flag(lst)
    set_handler(lst, _list)
    _register_projection(subparsers)
    _extend_status(subparsers)


def _register_replay(subparsers: Subparsers) -> None:
    rep = subparsers.add_parser(
        "replay",
        help="print saga timelines from the journal (--strict: check the current code)",
        description="Read the journal read-only and print each saga's timeline. With --strict, "
        "re-decide every recorded input with the current saga code and exit 1 on divergence.",
    )
    _journal_filters(rep)
    rep.add_argument(
        "--strict", action="store_true", help="re-decide every input; exit 1 on divergence"
    )
    rep.add_argument(
        "--sagas",
        "--app",
        dest="sagas",
        default=DEFAULT_DEFINITIONS,
        help=f"module:attribute of the saga definitions (default {DEFAULT_DEFINITIONS})",
    )
    _kafka_args(rep)
    add_json_flag(rep)
    set_handler(rep, _replay)


def _register_audit(subparsers: Subparsers) -> None:
    aud = subparsers.add_parser(
        "audit",
        help="check the journal's invariants; exit 1 with a report when one fails",
        description="Check hash chains, dispatches, side effects, compensations, terminal "
        "statuses and approvals over the journal (and the worker inbox with a database); "
        "with signing on, every entry's signature too.",
    )
    _journal_filters(aud)
    aud.add_argument(
        "--no-inbox", action="store_true", help="do not compare the worker inbox with the journal"
    )
    aud.add_argument(
        "--no-signatures",
        action="store_true",
        help="do not verify journal-entry signatures (checked when SAGALINE_SIGNING is on: "
        "an entry not signed by an orchestrator signer is a finding)",
    )
    _kafka_args(aud)
    _database_args(aud)
    add_json_flag(aud)
    set_handler(aud, _audit)


def _register_projection(subparsers: Subparsers) -> None:
    proj = subparsers.add_parser("projection", help="the PostgreSQL read model of the journal")
    proj_cmds = proj.add_subparsers(dest="projection_command", metavar="<command>", required=True)
    run = proj_cmds.add_parser("run", help="keep the read model until SIGTERM")
    run.add_argument("--name", default=DEFAULT_PROJECTION, help="consumer group / projection name")
    run.add_argument(
        "--until-caught-up",
        action="store_true",
        help="stop once the journal's end (as of the start) is projected",
    )
    run.add_argument("--batch-size", type=positive_int, default=500)
    run.add_argument("--timeout", type=float, help="give up after this many seconds")
    run.add_argument(
        "--instance-id",
        help="static group member id: a restart under the same id keeps its partitions",
    )
    _kafka_args(run)
    _database_args(run)
    add_json_flag(run)
    add_process_options(run)
    set_handler(run, with_process_services("projection", _projection_run, _projection_lag))


def _projection_lag(args: argparse.Namespace, settings: Settings) -> LagMonitor:
    """The projection's lag: its offsets are stored in PostgreSQL, not in Kafka."""
    url, topic = _database_url(args), settings.topics.journal
    schema = validate_schema(args.db_schema)

    def stored() -> dict[tuple[str, int], int]:
        with psycopg.connect(url or "", autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT partition, next_offset FROM {schema}.projection_offsets"
                " WHERE projection = %s AND topic = %s",
                (args.name, topic),
            ).fetchall()
        return {(topic, int(p)): int(o) for p, o in rows}

    return LagMonitor(settings.kafka_bootstrap_servers, args.name, (topic,), committed=stored)


def _extend_status(subparsers: Subparsers) -> None:
    """Add ``--from`` to the ``status`` command (or register it when absent)."""
    status = subparsers.choices.get("status")
    fallback: Handler | None = None
    if status is None:
        status = subparsers.add_parser("status", help="a saga's status from the read model")
        status.add_argument("saga_id")
        _kafka_args(status)
        add_json_flag(status)
    else:
        fallback = status.get_default("handler")
    status.add_argument(
        "--from",
        dest="status_source",
        choices=("auto", "read-model", "state"),
        default="auto",
        help="state topic or read model (PostgreSQL); auto (default): the state topic, "
        "which is exact, and the read model only for a saga no longer on it",
    )
    _database_args(status)

    def from_state(args: argparse.Namespace) -> int:
        if fallback is None:
            raise ConfigError("reading the state topic needs the orchestrator commands")
        return fallback(args)

    def handle(args: argparse.Namespace) -> int:
        source = args.status_source
        if source == "state":
            return from_state(args)
        if source == "read-model" or fallback is None:
            return _status_from_read_model(args)
        try:  # auto: one format, whether or not the read model has caught up
            return from_state(args)
        except (SagaNotFound, KafkaUnavailable) as missing:
            if not _database_url(args, required=False):
                raise
            try:  # a saga no longer on the state topic (or no topic): the read model's rows
                return _status_from_read_model(args)
            except (UnknownSagaId, ProjectionError) as exc:
                raise SagaNotFound(
                    f"unknown saga id {args.saga_id!r}: not on the state topic ({missing}) "
                    f"nor in the read model ({exc})"
                ) from exc

    set_handler(status, handle)


# -- helpers -------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(kafka_bootstrap_servers=args.bootstrap, topic_prefix=args.prefix)


def _database_url(args: argparse.Namespace, *, required: bool = True) -> str | None:
    url = (
        getattr(args, "database_url", None)
        or os.environ.get("DATABASE_URL")
        or read_env_file(dev_env_path()).get("DATABASE_URL")
    )
    if not url and required:
        raise ConfigError(
            "DATABASE_URL is not set; pass --database-url, export it or run `sagaline dev up`"
        )
    return url or None


# -- handlers ----------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    settings = _settings(args)
    definitions = load_definitions(args.sagas) if args.strict else None
    with RecordProgress("replaying the journal", enabled=not args.json) as counter:
        report = replay(
            settings.kafka_bootstrap_servers,
            settings.topics.journal,
            saga_id=args.saga_id,
            saga_type=args.saga_type,
            since=args.since,
            strict=args.strict,
            definitions=definitions,
            progress=counter.callback,
            timeout=args.timeout,
        )
    if args.saga_id and not report.sagas and not report.undecodable:
        raise UnknownSagaId(f"unknown saga id {args.saga_id!r}: not in {settings.topics.journal}")
    lines = [render_timeline(t) + "\n" for t in report.sagas]
    for bad in report.undecodable:
        lines.append(
            f"undecodable record {report.topic}[{bad.partition}]@{bad.offset}: {bad.error}"
        )
    for saga_id, fields in sorted(report.erased.items()):
        lines.append(f"saga {saga_id} is erased; unreadable fields: {', '.join(fields)}")
    summary = f"{len(report.sagas)} saga(s), {report.entries} journal entries"
    if report.strict:
        summary += f"; strict: {report.checked_inputs} inputs re-decided, "
        summary += f"{len(report.divergences)} divergence(s)"
        for divergence in report.divergences:
            lines.append("DIVERGENCE " + divergence.render())
        if report.unverified:
            lines.append(
                f"not re-decided (history starts after --since): {', '.join(report.unverified)}"
            )
    lines.append(summary)
    emit(args, report.to_dict(), "\n".join(lines))
    return EXIT_OK if report.ok else EXIT_FAILED


def _audit(args: argparse.Namespace) -> int:
    settings = _settings(args)
    database_url = None if args.no_inbox else _database_url(args, required=False)
    with RecordProgress("auditing the journal", enabled=not args.json) as counter:
        report = audit(
            settings.kafka_bootstrap_servers,
            settings.topics.journal,
            since=args.since,
            saga_id=args.saga_id,
            saga_type=args.saga_type,
            database_url=database_url,
            db_schema=args.db_schema,
            progress=counter.callback,
            timeout=args.timeout,
            signatures=not args.no_signatures,
        )
    if args.saga_id and report.sagas == 0 and report.ok:
        raise UnknownSagaId(f"unknown saga id {args.saga_id!r}: not in {settings.topics.journal}")
    emit(args, report.to_dict(), report.render())
    return EXIT_OK if report.ok else EXIT_FAILED


def _row_text(row: SagaStatusRow) -> str:
    where = f"waiting for {row.waiting_for}" if row.waiting_for else row.current_step or "-"
    return (
        f"{row.saga_id}  {row.saga_type} v{row.saga_version}  {row.status:<12} {where}"
        f"  updated {row.updated_at.isoformat()}"
    )


_NO_MATCH = (
    "no sagas match (this list comes from the read model that `sagaline projection run` "
    "keeps from the journal: is it running, and has it caught up?)"
)


def _list(args: argparse.Namespace) -> int:
    url = _database_url(args)
    assert url is not None
    rows = list_sagas(
        url, schema=args.db_schema, saga_type=args.saga_type, status=args.status, limit=args.limit
    )
    text = "\n".join(_row_text(r) for r in rows) if rows else _NO_MATCH
    emit(args, {"count": len(rows), "sagas": [r.to_dict() for r in rows]}, text)
    return EXIT_OK


def _status_from_read_model(args: argparse.Namespace) -> int:
    url = _database_url(args)
    assert url is not None
    row = get_saga(url, args.saga_id, schema=args.db_schema)
    if row is None:
        raise UnknownSagaId(
            f"unknown saga id {args.saga_id!r}: not in the read model "
            f"(schema {args.db_schema}; is `sagaline projection run` running?)"
        )
    timeline = get_timeline(url, args.saga_id, schema=args.db_schema)
    data: dict[str, Any] = row.to_dict()
    data["timeline"] = [
        {
            "seq": t.seq,
            "at": t.at.isoformat(),
            "input_type": t.input_type,
            "input": t.input,
            "events": t.events,
        }
        for t in timeline
    ]
    lines = [_row_text(row)]
    if row.error:
        lines.append(f"  error: {row.error}")
    usage = (row.llm_calls, row.tokens_in, row.tokens_out, row.cost_micros)
    lines.append(
        f"  seq {row.last_seq}, step attempts {row.attempts}, retries {row.retries}, "
        f"llm calls {usage[0]}, tokens {usage[1]}/{usage[2]}, cost {usage[3]} µ"
    )
    lines.extend(f"  #{t.seq} {t.at.isoformat()} {t.input}" for t in timeline)
    emit(args, data, "\n".join(lines))
    return EXIT_OK


def _projection_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    url = _database_url(args)
    assert url is not None
    projection = JournalProjection(
        settings.kafka_bootstrap_servers,
        settings.topics.journal,
        url,
        schema=args.db_schema,
        projection=args.name,
        batch_size=args.batch_size,
        instance_id=args.instance_id,
    )
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stats = projection.run(stop, until_caught_up=args.until_caught_up, timeout=args.timeout)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    data = {
        "batches": stats.batches,
        "applied": stats.applied,
        "skipped": stats.skipped,
        "undecodable": stats.undecodable,
        "fenced": stats.fenced,
    }
    emit(args, data, ", ".join(f"{k} {v}" for k, v in data.items()))
    return EXIT_OK
