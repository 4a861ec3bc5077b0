"""``sagaline fork SAGA --from-step NAME [--version V] [--id NEW]``.

Starts a new saga with the same input whose history copies SAGA's up to the
step (results reused, not re-run) and continues from there with the current
code; its journal records where it came from (``SagaForked``) and
``sagaline audit`` follows the link.
"""

from __future__ import annotations

import argparse

from sagaline.orchestrator.cli.client_cmds import connection_args, settings_of
from sagaline.orchestrator.cli.command import (
    EXIT_CODES_HELP,
    EXIT_OK,
    Subparsers,
    add_json_flag,
    emit,
    set_handler,
)
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.client.fork import fork_saga

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    """Add ``fork``."""
    parser = subparsers.add_parser(
        "fork",
        help="start a new saga copying another's history up to a step, then continuing",
        description="Start a new saga with SAGA's input whose journal copies SAGA's up to "
        "--from-step (recorded results reused, not re-run) and continues from that step with "
        "the current code (--version: a registered definition version, default SAGA's).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("saga_id", help="the saga to fork")
    parser.add_argument("--from-step", required=True, help="the step to run again")
    parser.add_argument("--version", type=int, help="definition version of the fork")
    parser.add_argument("--id", dest="new_id", help="the fork's saga id (default: SAGA.fork-…)")
    parser.add_argument("--by", help="who requests the fork")
    connection_args(parser)
    add_json_flag(parser)
    set_handler(parser, _fork)


def _fork(args: argparse.Namespace) -> int:
    with SagaClient(settings_of(args), debug=args.debug) as client:
        handle = fork_saga(
            client,
            args.saga_id,
            args.from_step,
            version=args.version,
            new_saga_id=args.new_id,
            requested_by=args.by,
        )
    data = {"saga_id": handle.saga_id, "source": args.saga_id, "from_step": args.from_step}
    text = (
        f"forked saga {args.saga_id} from step {args.from_step} as {handle.saga_id} "
        f"(follow it: sagaline wait {handle.saga_id})"
    )
    emit(args, data, text)
    return EXIT_OK
