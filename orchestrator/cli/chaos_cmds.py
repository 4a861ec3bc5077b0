"""``sagaline chaos``: the storm suite, and the effects-step processes of the chaos tests.

* ``chaos [--sagas N] [...]``: start a private 3-broker Kafka and a private
  PostgreSQL under ``--work-dir``, run the storm
  (:mod:`sagaline.orchestrator.chaos.storm`) and print its JSON report; exit 0
  when every invariant holds, 1 when one does not.
* ``chaos worker|relay``: a worker with the effects steps, or a relay, until
  SIGTERM (the chaos tests start them as subprocesses).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from sagaline.orchestrator.cli.command import Subparsers, set_handler

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    chaos = subparsers.add_parser(
        "chaos",
        help="the storm suite (JSON out), or effects-step processes for chaos runs",
        description="Without a role: run the storm suite on a private 3-broker cluster.",
    )
    chaos.add_argument("--sagas", type=int, default=300, help="sagas to run (default 300)")
    chaos.add_argument("--orchestrators", type=int, default=3)
    chaos.add_argument("--workers", type=int, default=3)
    chaos.add_argument("--relays", type=int, default=2)
    chaos.add_argument("--partitions", type=int, default=6)
    chaos.add_argument("--seed", type=int, default=0, help="0: a random seed")
    chaos.add_argument("--timeout", type=float, default=3600.0, help="seconds per phase")
    chaos.add_argument(
        "--storm-seconds", type=float, help="stop the faults after this long (default: when done)"
    )
    chaos.add_argument("--work-dir", type=Path, help="where servers and logs live (default: temp)")
    chaos.add_argument("--keep", action="store_true", help="keep the work directory")
    chaos.add_argument(
        "--no-snapshot",
        action="store_true",
        help="run the fleet from the installed code, not from a copy taken at start",
    )
    set_handler(chaos, _storm)
    roles = chaos.add_subparsers(dest="role", metavar="<role>")
    for role, text in (
        ("worker", "a worker running the effects steps"),
        ("relay", "an outbox relay"),
    ):
        p = roles.add_parser(role, help=text)
        p.add_argument("--bootstrap", required=True)
        p.add_argument("--dsn", required=True)
        p.add_argument("--schema", required=True)
        p.add_argument("--prefix", required=True)
        p.add_argument("--table", required=True)
        p.add_argument("--group", default="sagaline-testkit")
        p.add_argument("--instance-id")
        p.add_argument("--session-timeout-ms", type=int, default=6000)
        p.add_argument("--concurrency", type=int, default=4)
        p.add_argument("--delivery", default="auto", choices=("auto", "outbox", "kafka"))
        set_handler(p, _chaos_process)


def _chaos_process(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.chaos.effects import ProcessOptions, serve

    return serve(
        args.role,
        ProcessOptions(
            bootstrap=args.bootstrap,
            dsn=args.dsn,
            schema=args.schema,
            prefix=args.prefix,
            table=args.table,
            group=args.group,
            instance_id=args.instance_id,
            session_timeout_ms=args.session_timeout_ms,
            concurrency=args.concurrency,
            delivery=args.delivery,
        ),
    )


def _storm(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.chaos.storm import StormConfig, run_storm
    from sagaline.orchestrator.devenv.kafka import LocalKafka
    from sagaline.orchestrator.devenv.postgres import LocalPostgres
    from sagaline.orchestrator.devenv.provision import local_postgres_settings

    if args.sagas < 10:
        print("sagaline: error: --sagas must be at least 10", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    base = args.work_dir or Path(tempfile.mkdtemp(prefix="sagaline-storm-"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # PostgreSQL runs as its own user
    for sub in ("kafka", "postgres"):
        (base / sub).mkdir(exist_ok=True)
        (base / sub).chmod(0o755)
    kafka = LocalKafka(base / "kafka", brokers=3, quick_jit=True)
    postgres = LocalPostgres(base / "postgres", settings=local_postgres_settings())
    config = StormConfig(
        sagas=args.sagas,
        orchestrators=args.orchestrators,
        workers=args.workers,
        relays=args.relays,
        partitions=args.partitions,
        seed=args.seed,
        timeout=args.timeout,
        snapshot=not args.no_snapshot,
        storm_seconds=args.storm_seconds,
    )
    try:
        kafka.start()
        postgres.start()
        report = run_storm(config, kafka, postgres, base / "logs")
    finally:
        kafka.kill_all()
        postgres.kill()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    report["work_dir"] = str(base) if args.keep else None
    json.dump(report, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
    return 0 if report["passed"] else 1
