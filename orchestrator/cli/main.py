"""``sagaline``: the command line and the composition root.

Adding a command group: write ``orchestrator/cli/<group>.py`` with::

    from sagaline.orchestrator.cli.command import Subparsers, add_json_flag, emit, set_handler

    def register(subparsers: Subparsers) -> None:
        parser = subparsers.add_parser("group", help="one line")
        ...
        set_handler(leaf_parser, handle_leaf)   # handle_leaf(args) -> int

and append its dotted name to :data:`COMMAND_MODULES`. Handlers return an exit
code; they raise :class:`~sagaline.orchestrator.core.errors.SagalineError` for failures the user
can fix, which ``main`` prints as ``sagaline: error: <message>`` (exit codes in
:data:`~sagaline.orchestrator.cli.command.EXIT_CODES_HELP`). A traceback is printed only
with ``--debug`` (accepted anywhere on the command line), which also lets
librdkafka's own log lines through.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException

from sagaline.orchestrator.cli.command import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_KAFKA,
    EXIT_NO_VERDICT,
    EXIT_REJECTED,
    EXIT_UNKNOWN_SAGA,
    EXIT_USAGE,
)
from sagaline.orchestrator.client import (
    CommandRejected,
    DeliveryFailed,
    KafkaUnavailable,
    SagaNotFound,
    SagaRejected,
    WaitTimeout,
)
from sagaline.orchestrator.core.errors import SagalineError
from sagaline.orchestrator.runtime.kafka_config import LOG_LEVEL_ENV

__all__ = ["COMMAND_MODULES", "build_parser", "exit_code_for", "main"]

COMMAND_MODULES: tuple[str, ...] = (
    "sagaline.orchestrator.cli.dev",
    "sagaline.orchestrator.cli.worker_cmds",
    "sagaline.orchestrator.cli.orchestrator_cmds",
    "sagaline.orchestrator.cli.client_cmds",
    "sagaline.orchestrator.cli.status_cmds",
    "sagaline.orchestrator.cli.audit_cmds",
    "sagaline.orchestrator.cli.demo_cmds",
    "sagaline.orchestrator.cli.bench_cmds",
    "sagaline.orchestrator.cli.tool_cmds",
    "sagaline.orchestrator.cli.chaos_cmds",
    "sagaline.orchestrator.cli.console_cmds",
    "sagaline.orchestrator.cli.config_cmds",
    "sagaline.orchestrator.cli.approval_cmds",
    "sagaline.orchestrator.cli.fork_cmds",
    "sagaline.orchestrator.cli.schedule_cmds",
    "sagaline.orchestrator.cli.erase_cmds",
    "sagaline.orchestrator.cli.key_cmds",
    "sagaline.orchestrator.cli.watch_cmds",
)

_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (KafkaUnavailable, EXIT_KAFKA),
    (DeliveryFailed, EXIT_KAFKA),
    (SagaRejected, EXIT_REJECTED),
    (CommandRejected, EXIT_REJECTED),
    (SagaNotFound, EXIT_UNKNOWN_SAGA),
    (WaitTimeout, EXIT_NO_VERDICT),
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command group of :data:`COMMAND_MODULES`."""
    parser = argparse.ArgumentParser(
        prog="sagaline",
        description="Durable execution for AI-agent workflows on Kafka and PostgreSQL.",
        epilog="--debug (anywhere) prints tracebacks and Kafka client logs.\n\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    return parser


def exit_code_for(exc: BaseException) -> int:
    """The exit code of an expected failure."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return EXIT_ERROR


def _kafka_text(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    text = err.str() if isinstance(err, KafkaError) else str(exc)
    return (
        f"Kafka: {text} (check KAFKA_BOOTSTRAP_SERVERS or --bootstrap; "
        "`sagaline dev status` shows the local one)"
    )


def _split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    args = list(argv)
    debug = "--debug" in args[: args.index("--") if "--" in args else len(args)]
    return [a for a in args if a != "--debug"] if debug else args, debug


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit code."""
    args_list, debug = _split_debug(sys.argv[1:] if argv is None else argv)
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
        os.environ[LOG_LEVEL_ENV] = "7"  # librdkafka's own log lines, for every client
    parser = build_parser()
    args = parser.parse_args(args_list)
    args.debug = debug
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = handler(args)
    except KeyboardInterrupt:
        print("sagaline: interrupted", file=sys.stderr)
        return 130
    except SagalineError as exc:
        if debug:
            traceback.print_exc()
        print(f"sagaline: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KafkaException as exc:
        if debug:
            traceback.print_exc()
        print(f"sagaline: error: {_kafka_text(exc)}", file=sys.stderr)
        return EXIT_KAFKA
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(
            f"sagaline: internal error: {type(exc).__name__}: {exc} "
            "(run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return code
