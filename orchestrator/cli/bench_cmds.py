"""``sagaline bench orchestrator|core|long|workers|e2e|recovery|replay|codec|responder``.

Each prints one JSON document on stdout (``responder`` is the worker stand-in the
orchestrator benchmark starts as a subprocess). The measuring code lives in
:mod:`sagaline.orchestrator.bench`; this module only parses options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from sagaline.orchestrator.cli.command import Subparsers, set_handler
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.core.errors import ConfigError

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks (JSON on stdout)")
    parts = bench.add_subparsers(dest="bench_command", metavar="<part>", required=True)
    _orchestrator(parts)
    core = parts.add_parser(
        "core", help="the pure core: CPU per decided input (goal 5), decide/journal/fold rates"
    )
    core.add_argument("--sagas", type=int, default=2_000)
    set_handler(core, _core)
    long = parts.add_parser(
        "long", help="the pure core's cost per input at 5/50/200 steps and 1,000 agent turns"
    )
    long.add_argument("--sagas", type=int, default=200, help="5-step sagas timed (others scale)")
    long.add_argument("--repeat", type=int, default=3, help="passes (the best median counts)")
    set_handler(long, _long)
    codec = parts.add_parser("codec", help="Avro encode/decode throughput of every record")
    codec.add_argument("--seconds", type=float, default=1.5, help="time spent per figure")
    set_handler(codec, _codec)
    signing = parts.add_parser("signing", help="CPU of one Ed25519 sign and verify per record")
    signing.add_argument("--seconds", type=float, default=1.0, help="CPU time per figure")
    set_handler(signing, _signing)
    _workers(parts)
    e2e = parts.add_parser(
        "e2e", help="5-step sagas through real orchestrator, worker and relay processes"
    )
    e2e.add_argument("--sagas", type=int, default=100, help="sequential sagas per path")
    e2e.add_argument("--throughput", type=int, default=2000, help="sagas at once (0: skip)")
    e2e.add_argument("--partitions", type=int, default=4)
    e2e.add_argument("--concurrency", type=int, default=64, help="the worker's --concurrency")
    e2e.add_argument("--paths", default="kafka,outbox", help="kafka and/or outbox")
    e2e.add_argument("--wait-sagas", type=int, default=50, help="SagaHandle.wait() timed (0: skip)")
    e2e.add_argument("--wait-many", type=int, default=1000, help="sagas one client waits on")
    e2e.add_argument(
        "--warm-sagas", type=int, default=300, help="sagas of each path run first, unmeasured"
    )
    _security_args(e2e)
    set_handler(e2e, _e2e)
    recovery = parts.add_parser(
        "recovery", help="SIGKILL a worker, the orchestrator or the relay; time to move again"
    )
    recovery.add_argument("--sagas", type=int, default=200, help="sagas in flight at the kill")
    recovery.add_argument("--victims", default="worker,orchestrator,relay")
    recovery.add_argument("--partitions", type=int, default=4)
    set_handler(recovery, _recovery)
    replay = parts.add_parser(
        "replay", help="audit replay read from Kafka (events/s); restore of parked sagas"
    )
    replay.add_argument("--sagas", type=int, default=5000, help="sagas journaled and audited")
    replay.add_argument("--parked", type=int, default=100_000, help="parked sagas restored")
    replay.add_argument("--partitions", type=int, default=4)
    set_handler(replay, _replay)
    responder = parts.add_parser(
        "responder", help="answer every task with a success, exactly once (until SIGTERM)"
    )
    responder.add_argument("--prefix", help="topic prefix (default: env)")
    responder.add_argument("--bootstrap", help="Kafka bootstrap servers (default: env)")
    responder.add_argument("--sleep-ms", type=float, default=0.0, help="simulated step time")
    responder.add_argument("--fetch-wait-max-ms", type=int, default=5)
    set_handler(responder, _responder)


def _orchestrator(parts: Subparsers) -> None:
    orch = parts.add_parser(
        "orchestrator", help="saga latency, throughput and recovery of the orchestrator"
    )
    orch.add_argument("--bootstrap", help="Kafka bootstrap servers (default: env)")
    orch.add_argument("--partitions", type=int, default=4)
    orch.add_argument("--sequential", type=int, default=100, help="sagas run one at a time")
    orch.add_argument("--throughput", type=int, default=1000, help="sagas sent at once")
    orch.add_argument("--recovery", type=int, default=1000, help="sagas in the kill test (0: skip)")
    orch.add_argument("--sleep-ms", type=float, default=5.0, help="simulated step time")
    orch.add_argument("--max-batch", type=int, default=500)
    orch.add_argument("--fetch-wait-max-ms", type=int, default=5)
    orch.add_argument("--keep-topics", action="store_true")
    set_handler(orch, _bench_orchestrator)


def _workers(parts: Subparsers) -> None:
    workers = parts.add_parser(
        "workers", help="worker hops: outbox and Kafka-transaction paths, relay throughput"
    )
    workers.add_argument("--paths", default="outbox,kafka", help="outbox, kafka or both")
    workers.add_argument("--tasks", type=int, default=200, help="tasks in the latency run")
    workers.add_argument("--interval-ms", type=float, default=10.0, help="gap between tasks")
    workers.add_argument("--burst", type=int, default=2000, help="tasks in the throughput run")
    workers.add_argument("--concurrency", type=int, default=8)
    workers.add_argument(
        "--e2e",
        type=int,
        default=0,
        metavar="SAGAS",
        help="also run SAGAS one-step sagas per path through the real orchestrator",
    )
    set_handler(workers, _bench_workers)


def _print(report: Any) -> int:
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _kafka_and_database() -> tuple[str, str]:
    settings = Settings.from_env(require_database=True)
    if settings.database_url is None:
        raise ConfigError("set DATABASE_URL (or run sagaline dev up)")
    return settings.kafka_bootstrap_servers, settings.database_url


def _bench_orchestrator(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.bench.run import BenchOptions, run_bench

    settings = Settings.from_env(kafka_bootstrap_servers=args.bootstrap)
    options = BenchOptions(
        bootstrap=settings.kafka_bootstrap_servers,
        partitions=args.partitions,
        sequential=args.sequential,
        throughput=args.throughput,
        recovery=args.recovery,
        sleep_ms=args.sleep_ms,
        max_batch=args.max_batch,
        fetch_wait_max_ms=args.fetch_wait_max_ms,
        keep_topics=args.keep_topics,
    )
    return _print(run_bench(options))


def _core(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.bench.core import run

    return _print(run(args.sagas))


def _long(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.bench.long import run

    if args.sagas < 1 or args.repeat < 1:
        raise ConfigError("--sagas and --repeat take a number of at least 1")
    return _print(run(repeat=args.repeat, sagas_5=args.sagas))


def _codec(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.bench.codec import run

    return _print(run(args.seconds))


def _signing(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.bench.signing import run

    return _print(run(args.seconds))


def _bench_workers(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.bench.workers import STEP_FOR_PATH, run_bench

    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or not set(paths) <= set(STEP_FOR_PATH):
        raise ConfigError(f"--paths takes outbox and/or kafka, got {args.paths!r}")
    bootstrap, dsn = _kafka_and_database()
    report = run_bench(
        bootstrap=bootstrap,
        dsn=dsn,
        paths=paths,
        latency_tasks=args.tasks,
        interval=args.interval_ms / 1000.0,
        burst=args.burst,
        concurrency=args.concurrency,
    )
    if args.e2e > 0:
        from sagaline.orchestrator.bench.workers_e2e import run_e2e

        report["end_to_end_with_orchestrator"] = run_e2e(
            bootstrap=bootstrap, dsn=dsn, sagas=args.e2e
        )
    return _print(report)


def _security_args(e2e: argparse.ArgumentParser) -> None:
    """``bench e2e``'s switches of the stack's security (docs/security.md, "Cost")."""
    e2e.add_argument(
        "--private-stack",
        action="store_true",
        help="start a private Kafka and PostgreSQL for this run (secured, signing on)",
    )
    e2e.add_argument(
        "--insecure",
        action="store_true",
        help="a private stack with security off: PLAINTEXT Kafka without SASL/ACLs, "
        "trust-auth PostgreSQL, no signatures (to measure what security costs)",
    )
    e2e.add_argument(
        "--no-signing", action="store_true", help="no Ed25519 signatures (SAGALINE_SIGNING=false)"
    )


def _e2e(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.bench.e2e import PATHS, run_e2e

    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or not set(paths) <= set(PATHS):
        raise ConfigError(f"--paths takes {' and/or '.join(PATHS)}, got {args.paths!r}")
    if args.sagas < 1 or args.partitions < 1 or args.concurrency < 1 or args.throughput < 0:
        raise ConfigError("--sagas, --partitions and --concurrency take a number of at least 1")
    signing = not (args.no_signing or args.insecure)
    with ExitStack() as stack:
        if args.private_stack or args.insecure:
            from sagaline.orchestrator.bench.private_stack import private_stack

            bootstrap, dsn = stack.enter_context(
                private_stack(secured=not args.insecure, signing=signing)
            )
        else:
            bootstrap, dsn = _kafka_and_database()
            if not signing:
                stack.enter_context(_signing_off())
        report = run_e2e(
            bootstrap=bootstrap,
            dsn=dsn,
            sagas=args.sagas,
            throughput=args.throughput,
            partitions=args.partitions,
            concurrency=args.concurrency,
            paths=paths,
            wait_sagas=args.wait_sagas,
            wait_many=args.wait_many,
            warm=args.warm_sagas,
        )
        report["security"] = _security()
    return _print(report)


@contextmanager
def _signing_off() -> Iterator[None]:
    """``SAGALINE_SIGNING=false`` for this process and the ones it starts, for a while."""
    from sagaline.orchestrator.runtime.signing_runtime import reset_signing

    before = os.environ.get("SAGALINE_SIGNING")
    os.environ["SAGALINE_SIGNING"] = "false"
    reset_signing()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SAGALINE_SIGNING", None)
        else:
            os.environ["SAGALINE_SIGNING"] = before
        reset_signing()


def _security() -> dict[str, Any]:
    """What the run had on: the Kafka protocol and whether records were signed."""
    from sagaline.orchestrator.config import EnvSettings
    from sagaline.orchestrator.runtime.signing_runtime import signing_config

    return {
        "kafka_security_protocol": EnvSettings.load().kafka_security_protocol,
        "signing": signing_config().enabled,
    }


def _recovery(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.bench.recovery import SCENARIOS, run_recovery

    victims = [v.strip() for v in args.victims.split(",") if v.strip()]
    if not victims or not set(victims) <= set(SCENARIOS):
        raise ConfigError(f"--victims takes {', '.join(SCENARIOS)}, got {args.victims!r}")
    if args.sagas < 1 or args.partitions < 1:
        raise ConfigError("--sagas and --partitions take a number of at least 1")
    bootstrap, dsn = _kafka_and_database()
    return _print(
        run_recovery(
            bootstrap=bootstrap,
            dsn=dsn,
            sagas=args.sagas,
            victims=victims,
            partitions=args.partitions,
        )
    )


def _replay(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.bench.replay import run_replay

    if args.sagas < 1 or args.parked < 1 or args.partitions < 1:
        raise ConfigError("--sagas, --parked and --partitions take a number of at least 1")
    bootstrap = Settings.from_env().kafka_bootstrap_servers
    return _print(
        run_replay(
            bootstrap=bootstrap, sagas=args.sagas, parked=args.parked, partitions=args.partitions
        )
    )


def _responder(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.bench.responder import serve

    return serve(
        args.bootstrap,
        args.prefix,
        sleep_ms=args.sleep_ms,
        fetch_wait_max_ms=args.fetch_wait_max_ms,
    )
