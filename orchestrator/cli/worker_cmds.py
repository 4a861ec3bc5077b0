"""``sagaline worker run|migrate`` and ``sagaline relay run``: long-running processes.

Both stop cleanly on SIGTERM or SIGINT: the worker finishes its running
steps, commits offsets and leaves its consumer group; the relay finishes the
batch it is publishing and releases its shard locks.

The worker's and the relay's code is imported by the command that runs it
(a relay does not import the worker, the step runner or the saga core).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Iterable
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from sagaline.orchestrator.cli.command import Subparsers, add_json_flag, emit, set_handler
from sagaline.orchestrator.cli.config_cmds import add_process_options, with_process_services
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.core.errors import ConfigError

if TYPE_CHECKING:
    from sagaline.consumers.handlers import HandlerResolver
    from sagaline.orchestrator.runtime.metrics import LagMonitor

__all__ = ["load_resolver", "register"]

log = logging.getLogger("sagaline.cli")


def register(subparsers: Subparsers) -> None:
    """Add the ``worker`` and ``relay`` command groups."""
    worker = subparsers.add_parser(
        "worker",
        help="run saga steps exactly once",
        description="Step workers: consume tasks, run steps, reply through the outbox.",
    )
    worker_cmds = worker.add_subparsers(dest="worker_command", metavar="<command>", required=True)
    run = worker_cmds.add_parser("run", help="run a worker until SIGTERM")
    run.add_argument(
        "--app",
        required=True,
        help="module:attribute of a SagaRegistry, a list of Saga classes or a handler resolver",
    )
    run.add_argument("--group", default="sagaline-workers", help="consumer group id")
    run.add_argument(
        "--instance-id", help="stable id of this worker (fences its predecessor's transactions)"
    )
    run.add_argument("--concurrency", type=int, default=8, help="steps running at once")
    run.add_argument(
        "--delivery",
        choices=("auto", "outbox", "kafka"),
        default="auto",
        help="reply path: per handler (auto), Postgres outbox, or Kafka transaction",
    )
    run.add_argument(
        "--payload-threshold",
        type=int,
        default=64 * 1024,
        help="bytes above which payloads are stored",
    )
    run.add_argument("--default-timeout-s", type=float, help="step timeout when none is declared")
    run.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start")
    _connection_args(run)
    add_process_options(run)
    set_handler(run, with_process_services("worker", _run_worker, _worker_lag))

    mig = worker_cmds.add_parser("migrate", help="apply the worker-table migrations and exit")
    _connection_args(mig)
    add_json_flag(mig)
    set_handler(mig, _migrate)

    relay = subparsers.add_parser(
        "relay",
        help="publish the outbox to Kafka",
        description="Outbox relay: publishes committed replies, marks them sent.",
    )
    relay_cmds = relay.add_subparsers(dest="relay_command", metavar="<command>", required=True)
    rrun = relay_cmds.add_parser("run", help="run a relay until SIGTERM")
    rrun.add_argument("--max-shards", type=int, default=32, help="outbox shards this relay may own")
    rrun.add_argument("--poll-interval", type=float, default=1.0, help="safety-net poll (seconds)")
    rrun.add_argument("--retention-s", type=float, default=3600.0, help="keep sent rows this long")
    _connection_args(rrun)
    add_process_options(rrun)
    set_handler(rrun, with_process_services("relay", _run_relay))


def _worker_lag(args: argparse.Namespace, settings: Settings) -> LagMonitor:
    from sagaline.orchestrator.runtime.metrics import LagMonitor

    return LagMonitor(settings.kafka_bootstrap_servers, args.group, (settings.topics.tasks,))


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: env)")
    parser.add_argument("--database-url", help="PostgreSQL DSN (default: env DATABASE_URL)")
    parser.add_argument("--prefix", help="topic prefix (default: env or 'sagaline')")
    parser.add_argument("--schema", default="sagaline", help="PostgreSQL schema of worker tables")


def _settings(args: argparse.Namespace) -> Settings:
    from sagaline.orchestrator.runtime import data_keys

    settings = Settings.from_env(
        kafka_bootstrap_servers=args.bootstrap,
        database_url=args.database_url,
        topic_prefix=args.prefix,
        require_database=True,
    )
    data_keys.configure(settings)  # personal fields: this deployment's data keys
    return settings


def load_resolver(spec: str) -> HandlerResolver:
    """Import ``module:attribute`` and turn it into a handler resolver.

    The attribute may be a ``SagaRegistry``, an iterable of ``Saga`` classes,
    one ``Saga`` class, an object with ``resolve(...)``, or a zero-argument
    callable returning one of those.
    """
    from sagaline.consumers.handlers import RegistryResolver
    from sagaline.orchestrator.core.registry import SagaRegistry
    from sagaline.orchestrator.core.saga import Saga
    from sagaline.orchestrator.runtime.loader import load_object

    obj: Any = load_object(spec, option="--app", error=ConfigError, call_unless="resolve")
    if hasattr(obj, "resolve"):
        resolver: HandlerResolver = obj
        return resolver
    if isinstance(obj, SagaRegistry):
        return RegistryResolver(obj)
    if isinstance(obj, type) and issubclass(obj, Saga):
        return RegistryResolver(SagaRegistry([obj]))
    if isinstance(obj, Iterable):
        items = list(obj)
        if items and all(isinstance(i, type) and issubclass(i, Saga) for i in items):
            return RegistryResolver(SagaRegistry(items))
    raise ConfigError(f"{spec!r} is not a SagaRegistry, Saga classes or a handler resolver")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def _wait_for_services(settings: Settings, stop: threading.Event) -> bool:
    """Wait (with backoff, logging what for) until PostgreSQL and Kafka answer.

    A process started during an outage waits instead of exiting; ``False``
    when a signal stopped it while waiting.
    """
    from sagaline.consumers.startup import wait_for_database, wait_for_kafka

    if settings.database_url is not None and not wait_for_database(settings.database_url, stop):
        return False
    return wait_for_kafka(settings.kafka_bootstrap_servers, stop)


def _run_worker(args: argparse.Namespace) -> int:
    from sagaline.consumers.worker import Worker, WorkerOptions
    from sagaline.orchestrator.runtime.startup_clock import log_startup

    settings = _settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log_startup("worker", "imports done")
    resolver = load_resolver(args.app)
    timeout = timedelta(seconds=args.default_timeout_s) if args.default_timeout_s else None
    stop = _stop_on_signals()
    if not _wait_for_services(settings, stop):
        return 0
    log_startup("worker", "app loaded, PostgreSQL and Kafka answered")
    worker = Worker(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        database_url=settings.database_url,
        topics=settings.topics,
        resolver=resolver,
        options=WorkerOptions(
            group_id=args.group,
            instance_id=args.instance_id,
            schema=args.schema,
            concurrency=args.concurrency,
            delivery=args.delivery,
            payload_threshold=args.payload_threshold,
            default_timeout=timeout,
            migrate=not args.no_migrate,
        ),
    )
    log.info("worker %s consuming %s", args.group, settings.topics.tasks)
    worker.run(stop)
    log.info("worker stopped: %s", worker.stats)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from sagaline.consumers.migrations import migrate

    settings = _settings(args)
    assert settings.database_url is not None
    result = migrate(settings.database_url, args.schema)
    emit(
        args,
        {"schema": result.schema, "version": result.version, "applied": list(result.applied)},
        f"schema {result.schema} at version {result.version}"
        + (f" (applied {', '.join(map(str, result.applied))})" if result.applied else ""),
    )
    return 0


def _run_relay(args: argparse.Namespace) -> int:
    from sagaline.consumers.migrations import migrate
    from sagaline.consumers.relay import Relay, RelayOptions
    from sagaline.orchestrator.runtime.startup_clock import log_startup

    settings = _settings(args)
    assert settings.database_url is not None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log_startup("relay", "imports done")
    stop = _stop_on_signals()
    if not _wait_for_services(settings, stop):
        return 0
    log_startup("relay", "PostgreSQL and Kafka answered")
    migrate(settings.database_url, args.schema)
    relay = Relay(
        settings.database_url,
        settings.kafka_bootstrap_servers,
        RelayOptions(
            schema=args.schema,
            max_shards=args.max_shards,
            poll_interval=args.poll_interval,
            retention_seconds=args.retention_s,
            deadletter_topic=settings.topics.deadletter,
        ),
    )
    try:
        relay.run(stop)
    finally:
        relay.close()
    log.info("relay stopped: %s", relay.stats)
    return 0
