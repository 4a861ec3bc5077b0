"""``sagaline schedules list|pause|resume``.

A schedule is declared in code (``Schedule(...)`` in the ``--app`` list of
``sagaline orchestrator run``); its state (the last tick decided, the sagas
started, paused or not) is a snapshot on the state topic under the key
``schedule:<name>``.  ``list`` reads those snapshots; ``pause`` and ``resume``
send a ``PauseSaga``/``ResumeSaga`` command to the schedule and wait until
its snapshot shows it applied (a paused schedule starts nothing; resuming
does not start the ticks that passed while it was paused).
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from confluent_kafka import Consumer

from sagaline.orchestrator.cli.client_cmds import connection_args, settings_of
from sagaline.orchestrator.cli.command import (
    EXIT_CODES_HELP,
    EXIT_OK,
    Subparsers,
    add_json_flag,
    emit,
    set_handler,
)
from sagaline.orchestrator.client import SagaClient, SagaNotFound, WaitTimeout
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.core.schedule import SCHEDULE_PREFIX, schedule_name_of
from sagaline.orchestrator.core.schedule_decide import ScheduleData, schedule_data
from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.orchestrator.runtime.restore import read_partition_latest
from sagaline.orchestrator.runtime.stable_read import topic_partitions
from sagaline.schemas.codec import default_codec
from sagaline.schemas.state import SagaState

__all__ = ["read_schedules", "register"]


def register(subparsers: Subparsers) -> None:
    """Add ``schedules list|pause|resume``."""
    parser = subparsers.add_parser(
        "schedules",
        help="list, pause and resume the schedules that start sagas",
        description="Schedules start a saga type on a cron expression or an interval "
        "(declared in the orchestrator's --app). list shows each one's state; pause stops "
        "its ticks until resume (ticks that pass while paused never start).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", metavar="<list|pause|resume>", required=True)
    listing = verbs.add_parser("list", help="every schedule the orchestrators have declared")
    connection_args(listing)
    add_json_flag(listing)
    set_handler(listing, _list)
    for verb in ("pause", "resume"):
        sub = verbs.add_parser(verb, help=f"{verb} a schedule (durably: a command on Kafka)")
        sub.add_argument("name", help="the schedule's name")
        sub.add_argument("--by", default="cli", help="who asks (recorded in the schedule)")
        sub.add_argument("--reason", help="why (recorded in the schedule)")
        sub.add_argument(
            "--timeout", type=float, default=30.0, help="seconds to wait until it is applied"
        )
        connection_args(sub)
        add_json_flag(sub)
        set_handler(sub, _pause if verb == "pause" else _resume)


def read_schedules(settings: Settings, timeout: float = 30.0) -> dict[str, SagaState]:
    """Every schedule's latest snapshot, by name (read from the state topic)."""
    topic = settings.topics.state
    reader = Consumer(
        reader_config(settings.kafka_bootstrap_servers, f"sagaline-schedules-{uuid.uuid4().hex}")
    )
    codec = default_codec()
    try:
        values, _ends, _count = read_partition_latest(
            reader, topic, topic_partitions(reader, topic), timeout=timeout
        )
    finally:
        reader.close()
    out: dict[str, SagaState] = {}
    for latest in values.values():
        for key, raw in latest.items():
            name = schedule_name_of(key)
            if name is not None:
                out[name] = codec.decode(raw, SagaState)
    return dict(sorted(out.items()))


def _row(state: SagaState) -> dict[str, Any]:
    data = schedule_data(state)
    nxt = state.timers[0].due_at if state.timers else None
    return {
        "name": data.name,
        "status": "paused" if data.paused else "running",
        "spec": data.describe,
        "declared_at": data.declared_at,
        "next_tick": nxt,
        "last_saga": data.last_saga_id,
        "started": data.started,
        "skipped": data.skipped,
        "changed_by": data.changed_by,
        "changed_at": data.changed_at,
        "reason": data.reason,
    }


def _list(args: argparse.Namespace) -> int:
    rows = [_row(state) for state in read_schedules(settings_of(args)).values()]
    lines = []
    for r in rows:
        nxt = r["next_tick"].isoformat() if r["next_tick"] else "-"
        lines.append(
            f"{r['name']}  {r['status']}  {r['spec']}\n"
            f"    next tick {nxt}, started {r['started']}, skipped {r['skipped']}, "
            f"last saga {r['last_saga'] or '-'}"
        )
    text = "\n".join(lines) if lines else "no schedules (an orchestrator declares its app's)"
    emit(args, {"schedules": rows}, text)
    return EXIT_OK


def _current(client: SagaClient, name: str) -> ScheduleData:
    state = client.status(SCHEDULE_PREFIX + name)
    if state is None:
        raise SagaNotFound(
            f"no schedule {name!r} (an orchestrator whose --app lists it declares it; "
            "`sagaline schedules list` shows the declared ones)"
        )
    return schedule_data(state)


def _change(args: argparse.Namespace, pause: bool) -> int:
    verb, done = ("pause", "paused") if pause else ("resume", "resumed")
    schedule_id = SCHEDULE_PREFIX + args.name
    with SagaClient(settings_of(args), debug=args.debug) as client:
        before = _current(client, args.name)
        if before.paused == pause:
            state = "paused" if pause else "running"
            emit(
                args,
                {"name": args.name, "changed": False},
                f"schedule {args.name} is already {state}",
            )
            return EXIT_OK
        send = client.pause if pause else client.resume
        send(schedule_id, by=args.by, reason=args.reason)
        deadline = time.monotonic() + args.timeout
        while True:
            after = _current(client, args.name)
            if after.paused == pause:
                break
            if time.monotonic() > deadline:
                raise WaitTimeout(
                    f"the {verb} of schedule {args.name} was sent but not applied within "
                    f"{args.timeout:g} s (is an orchestrator with this schedule running?)"
                )
            time.sleep(0.2)
    data = {"name": args.name, "changed": True, "paused": pause, "by": args.by}
    emit(args, data, f"{done} schedule {args.name} (by {args.by})")
    return EXIT_OK


def _pause(args: argparse.Namespace) -> int:
    return _change(args, True)


def _resume(args: argparse.Namespace) -> int:
    return _change(args, False)
