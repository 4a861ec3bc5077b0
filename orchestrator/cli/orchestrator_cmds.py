"""``sagaline topics ensure`` and ``sagaline orchestrator run`` (``bench``: bench_cmds).

The client commands are in :mod:`sagaline.orchestrator.cli.client_cmds` (writes)
and :mod:`sagaline.orchestrator.cli.status_cmds` (``status``, ``wait``).
"""

from __future__ import annotations

import argparse

from sagaline.orchestrator.cli.command import Subparsers, add_json_flag, emit, set_handler
from sagaline.orchestrator.cli.config_cmds import add_process_options, with_process_services
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.runtime.local_runs import LocalSteps
from sagaline.orchestrator.runtime.metrics import LagMonitor
from sagaline.orchestrator.runtime.process import add_run_arguments, run_from_args
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics

__all__ = ["register"]


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: env / dev file)")
    parser.add_argument("--prefix", help="topic prefix (default: env or 'sagaline')")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(kafka_bootstrap_servers=args.bootstrap, topic_prefix=args.prefix)


def register(subparsers: Subparsers) -> None:
    """Add ``topics`` and ``orchestrator``."""
    topics = subparsers.add_parser("topics", help="create or verify sagaline's topics")
    topic_cmds = topics.add_subparsers(dest="topics_command", metavar="<command>", required=True)
    ensure = topic_cmds.add_parser("ensure", help="create missing topics, verify all")
    ensure.add_argument("--partitions", type=int, default=6)
    ensure.add_argument("--replication", type=int, default=1)
    ensure.add_argument("--check", action="store_true", help="verify only, create nothing")
    _connection_args(ensure)
    add_json_flag(ensure)
    set_handler(ensure, _topics_ensure)

    orch = subparsers.add_parser("orchestrator", help="run the saga orchestrator")
    orch_cmds = orch.add_subparsers(dest="orchestrator_command", metavar="<command>", required=True)
    run = orch_cmds.add_parser("run", help="run one orchestrator process until SIGTERM")
    add_run_arguments(run)
    run.add_argument(
        "--database-url",
        help="PostgreSQL of the sagas' local database steps (default: DATABASE_URL / dev file)",
    )
    run.add_argument(
        "--local-schema",
        default="sagaline",
        help="schema of the local steps' inbox: the workers' --schema (default sagaline)",
    )
    add_process_options(run)
    set_handler(run, with_process_services("orchestrator", _run_orchestrator, _lag))


def _run_orchestrator(args: argparse.Namespace) -> int:
    """``orchestrator run``, with the runner of the sagas' local steps wired in."""

    def local_steps(logic: object, settings: Settings, codec: object) -> LocalSteps | None:
        from sagaline.consumers.local_steps import local_steps_for

        url = args.database_url or settings.database_url
        return local_steps_for(logic, url, settings.topics.replies, schema=args.local_schema)

    return run_from_args(args, local=local_steps)


def _lag(args: argparse.Namespace, settings: Settings) -> LagMonitor:
    topics = (settings.topics.commands, settings.topics.replies)
    return LagMonitor(settings.kafka_bootstrap_servers, args.group, topics)


def _topics_ensure(args: argparse.Namespace) -> int:
    settings = _settings(args)
    specs = ensure_topics(
        settings.kafka_bootstrap_servers,
        settings.topics,
        TopicLayout(partitions=args.partitions, replication=args.replication),
        create=not args.check,
    )
    data = {s.name: {"partitions": s.partitions, "config": dict(s.config)} for s in specs}
    emit(args, {"topics": data}, "\n".join(f"ok  {s.name}" for s in specs))
    return 0
