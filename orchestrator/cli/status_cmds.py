"""``sagaline status`` and ``sagaline wait``: a saga's snapshot from the state topic.

Both print one format (:mod:`sagaline.orchestrator.cli.status_view`), text or
``--json``; ``wait`` reports a start the orchestrator rejected (exit 6, with
the dead letter's reason) instead of waiting for it.
"""

from __future__ import annotations

import argparse

from sagaline.orchestrator.cli.client_cmds import connection_args, settings_of
from sagaline.orchestrator.cli.command import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    add_json_flag,
    emit,
    set_handler,
)
from sagaline.orchestrator.cli.status_view import summary, text
from sagaline.orchestrator.client import SagaClient, SagaNotFound
from sagaline.orchestrator.core.errors import ConfigError

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    """Add ``status`` and ``wait``."""
    status = subparsers.add_parser(
        "status",
        help="print a saga's latest snapshot",
        description="A saga's latest snapshot: status, current node, open waits with their "
        "deadline, each step (compensated steps show 'compensated') and budgets used.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("saga_id")
    connection_args(status)
    add_json_flag(status)
    set_handler(status, _status)

    wait = subparsers.add_parser(
        "wait",
        help="wait until a saga is terminal",
        description="Wait until the saga finishes and print its snapshot (exit 0 when it "
        "completed, 1 when it ended otherwise, 6 when its start was rejected, 7 on timeout).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    wait.add_argument("saga_id")
    wait.add_argument("--timeout", type=float, default=60.0)
    connection_args(wait)
    add_json_flag(wait)
    set_handler(wait, _wait)


def _status(args: argparse.Namespace) -> int:
    with SagaClient(settings_of(args), debug=args.debug) as client:
        state = client.status(args.saga_id)
    if state is None:
        raise SagaNotFound(
            f"no snapshot of saga {args.saga_id!r} on the state topic "
            "(not started, or its start was rejected: try `sagaline wait` for the reason)"
        )
    emit(args, summary(state), text(state))
    return EXIT_OK


def _wait(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise ConfigError("--timeout must be positive")
    with SagaClient(settings_of(args), debug=args.debug) as client:
        state = client.wait(args.saga_id, timeout=args.timeout)
    emit(args, summary(state), text(state))
    return EXIT_OK if state.status == "completed" else EXIT_FAILED
