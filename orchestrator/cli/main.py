"""``sagaline``: the command line and the composition root.

Adding a command group: write ``orchestrator/cli/<group>.py`` with::

    from sagaline.orchestrator.cli.command import Subparsers, add_json_flag, emit, set_handler

    def register(subparsers: Subparsers) -> None:
        parser = subparsers.add_parser("group", help="one line")
        ...
        set_handler(leaf_parser, handle_leaf)   # handle_leaf(args) -> int

and append its dotted name to :data:`COMMAND_MODULES`. Handlers return an exit
code; they raise :class:`~sagaline.orchestrator.core.errors.SagalineError` for failures the user
can fix, which ``main`` prints as ``sagaline: error: <message>`` with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sagaline.orchestrator.cli.command import EXIT_ERROR, EXIT_USAGE
from sagaline.orchestrator.core.errors import SagalineError

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

COMMAND_MODULES: tuple[str, ...] = (
    "sagaline.orchestrator.cli.dev",
    "sagaline.orchestrator.cli.worker_cmds",
    "sagaline.orchestrator.cli.orchestrator_cmds",
    "sagaline.orchestrator.cli.audit_cmds",
    "sagaline.orchestrator.cli.demo_cmds",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command group of :data:`COMMAND_MODULES`."""
    parser = argparse.ArgumentParser(
        prog="sagaline",
        description="Durable execution for AI-agent workflows on Kafka and PostgreSQL.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = handler(args)
    except SagalineError as exc:
        print(f"sagaline: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("sagaline: interrupted", file=sys.stderr)
        return 130
    return code
