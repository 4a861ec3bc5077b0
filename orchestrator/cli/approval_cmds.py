"""``sagaline approval SAGA WAIT``: what an approver is shown, and its SHA-256.

An approval bound to what its approver saw (``approval(bound=True)`` or a
``@<approval>.shows`` view) is granted only with that hash::

    sagaline approval refund-o-17 manager_ok
    sagaline approve refund-o-17 manager_ok --by alice --seen <sha256>
"""

from __future__ import annotations

import argparse
import json

from sagaline.orchestrator.cli.client_cmds import connection_args, settings_of
from sagaline.orchestrator.cli.command import (
    EXIT_CODES_HELP,
    EXIT_OK,
    Subparsers,
    add_json_flag,
    emit,
    set_handler,
)
from sagaline.orchestrator.client import SagaClient, SagaNotFound
from sagaline.orchestrator.core.errors import ConfigError
from sagaline.schemas.base import Payload
from sagaline.schemas.payload import payload_sha256

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    """Add ``approval``."""
    parser = subparsers.add_parser(
        "approval",
        help="show what an open approval shows its approver, with the SHA-256 to approve on",
        description="Print the data an open approval shows (its view, or the saga data) and "
        "its SHA-256. `sagaline approve SAGA WAIT --by YOU --seen SHA256` grants the approval "
        "on exactly that data; the orchestrator refuses it if the data changed since.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("saga_id")
    parser.add_argument("wait_name", metavar="wait", help="the approval's name")
    connection_args(parser)
    add_json_flag(parser)
    set_handler(parser, _approval)


def _readable(payload: Payload) -> object:
    try:
        return json.loads(payload.data or b"null")
    except ValueError:
        return (payload.data or b"").decode(errors="replace")


def _approval(args: argparse.Namespace) -> int:
    with SagaClient(settings_of(args), debug=args.debug) as client:
        state = client.status(args.saga_id)
    if state is None:
        raise SagaNotFound(f"no snapshot of saga {args.saga_id!r} on the state topic")
    wait = next((w for w in state.waits if w.name == args.wait_name), None)
    if wait is None or wait.kind == "signal":
        open_ = ", ".join(w.name for w in state.waits if w.kind != "signal") or "none"
        raise ConfigError(
            f"saga {args.saga_id!r} has no open approval {args.wait_name!r} (open: {open_})"
        )
    shown = wait.shown or state.data
    sha = wait.shown_sha256 or payload_sha256(shown)
    data = {
        "saga_id": args.saga_id,
        "wait": wait.name,
        "bound": wait.bound,
        "shown": _readable(shown),
        "shown_sha256": sha,
    }
    lines = [
        f"approval {wait.name} of saga {args.saga_id}" + (" (bound)" if wait.bound else ""),
        json.dumps(data["shown"], indent=2, sort_keys=True),
        f"sha256: {sha}",
        f"approve: sagaline approve {args.saga_id} {wait.name} --by YOU --seen {sha}",
    ]
    emit(args, data, "\n".join(lines))
    return EXIT_OK
