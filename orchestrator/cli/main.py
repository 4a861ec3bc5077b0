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
from typing import Any

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
from sagaline.orchestrator.core.errors import SagalineError

__all__ = ["COMMANDS", "COMMAND_MODULES", "build_parser", "exit_code_for", "main"]

#: ``sagaline.orchestrator.runtime.kafka_config.LOG_LEVEL_ENV`` (not imported: it loads the
#: settings; a unit test checks they agree)
LOG_LEVEL_ENV = "SAGALINE_KAFKA_LOG_LEVEL"

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
    "sagaline.orchestrator.cli.deadletter_cmds",
)

_CLI = "sagaline.orchestrator.cli"
#: the command modules that register (or extend) each top-level command, in
#: :data:`COMMAND_MODULES` order
COMMANDS: dict[str, tuple[str, ...]] = {
    "dev": (f"{_CLI}.dev",),
    "worker": (f"{_CLI}.worker_cmds",),
    "relay": (f"{_CLI}.worker_cmds",),
    "topics": (f"{_CLI}.orchestrator_cmds",),
    "orchestrator": (f"{_CLI}.orchestrator_cmds",),
    "start": (f"{_CLI}.client_cmds",),
    "signal": (f"{_CLI}.client_cmds",),
    "approve": (f"{_CLI}.client_cmds",),
    "reject": (f"{_CLI}.client_cmds",),
    "cancel": (f"{_CLI}.client_cmds",),
    "pause": (f"{_CLI}.client_cmds",),
    "resume": (f"{_CLI}.client_cmds",),
    "retry-step": (f"{_CLI}.client_cmds",),
    "skip-step": (f"{_CLI}.client_cmds",),
    "status": (f"{_CLI}.status_cmds", f"{_CLI}.audit_cmds"),
    "wait": (f"{_CLI}.status_cmds",),
    "replay": (f"{_CLI}.audit_cmds",),
    "audit": (f"{_CLI}.audit_cmds",),
    "list": (f"{_CLI}.audit_cmds",),
    "projection": (f"{_CLI}.audit_cmds",),
    "demo": (f"{_CLI}.demo_cmds",),
    "bench": (f"{_CLI}.bench_cmds",),
    "schemas": (f"{_CLI}.tool_cmds",),
    "sagas": (f"{_CLI}.tool_cmds",),
    "chaos": (f"{_CLI}.chaos_cmds",),
    "ui": (f"{_CLI}.console_cmds",),
    "config": (f"{_CLI}.config_cmds",),
    "approval": (f"{_CLI}.approval_cmds",),
    "fork": (f"{_CLI}.fork_cmds",),
    "schedules": (f"{_CLI}.schedule_cmds",),
    "erase": (f"{_CLI}.erase_cmds",),
    "kek": (f"{_CLI}.erase_cmds",),
    "keys": (f"{_CLI}.key_cmds",),
    "watch": (f"{_CLI}.watch_cmds",),
    "deadletters": (f"{_CLI}.deadletter_cmds",),
}

#: exit codes of the client's errors, by class name (the client is imported only by the
#: commands that use it: an error of a class never imported cannot have been raised)
_CODES: tuple[tuple[str, str, int], ...] = (
    ("sagaline.orchestrator.client.errors", "KafkaUnavailable", EXIT_KAFKA),
    ("sagaline.orchestrator.client.errors", "DeliveryFailed", EXIT_KAFKA),
    ("sagaline.orchestrator.client.errors", "SagaRejected", EXIT_REJECTED),
    ("sagaline.orchestrator.client.errors", "CommandRejected", EXIT_REJECTED),
    ("sagaline.orchestrator.client.errors", "SagaNotFound", EXIT_UNKNOWN_SAGA),
    ("sagaline.orchestrator.client.errors", "WaitTimeout", EXIT_NO_VERDICT),
)


def _loaded(module: str, name: str) -> Any:
    """``module.name`` if ``module`` was imported already, else ``None``."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser: with ``command`` (a name of :data:`COMMANDS`) only that
    command's modules are imported; otherwise every group of :data:`COMMAND_MODULES`."""
    parser = argparse.ArgumentParser(
        prog="sagaline",
        description="Durable execution for AI-agent workflows on Kafka and PostgreSQL.",
        epilog="--debug (anywhere) prints tracebacks and Kafka client logs.\n\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    chosen = COMMANDS.get(command or "", COMMAND_MODULES)
    for module_name in chosen:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    return parser


def exit_code_for(exc: BaseException) -> int:
    """The exit code of an expected failure."""
    for module, name, code in _CODES:
        kind = _loaded(module, name)
        if kind is not None and isinstance(exc, kind):
            return code
    return EXIT_ERROR


def _kafka_error(exc: BaseException) -> bool:
    """A ``confluent_kafka.KafkaException`` (only possible once Kafka's client is loaded)."""
    kind = _loaded("confluent_kafka", "KafkaException")
    return kind is not None and isinstance(exc, kind)


def _kafka_text(exc: BaseException) -> str:
    err: Any = exc.args[0] if exc.args else None
    text = err.str() if hasattr(err, "str") else str(exc)
    return (
        f"Kafka: {text} (check KAFKA_BOOTSTRAP_SERVERS or --bootstrap; "
        "`sagaline dev status` shows the local one)"
    )


def _command_of(args: Sequence[str]) -> str | None:
    """The top-level command ``args`` name (their first word), if it is one of ours."""
    first = args[0] if args else None
    return first if first in COMMANDS else None


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
    parser = build_parser(_command_of(args_list))
    args = parser.parse_args(args_list)
    args.debug = debug
    handler = getattr(args, "handler", None)
    if handler is None:
        build_parser().print_help(sys.stderr)
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
    except Exception as exc:
        if debug:
            traceback.print_exc()
        if _kafka_error(exc):
            print(f"sagaline: error: {_kafka_text(exc)}", file=sys.stderr)
            return EXIT_KAFKA
        print(
            f"sagaline: internal error: {type(exc).__name__}: {exc} "
            "(run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    return code
