"""``sagaline watch SAGA``: a saga's state changes and its steps' progress, live.

One line per change of status or node and one per progress item a step or
agent turn published (``ctx.progress``); partial output (an LLM's tokens) is
written as it arrives, on one line per task.  When the saga is terminal its
snapshot is printed as ``sagaline wait`` prints it, and the exit code is
``wait``'s.  ``--json`` writes one JSON object per line (``mode``: ``state``
or ``progress``), the last one the final snapshot.  Progress is advisory:
some items may be missing, never a state.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from sagaline.orchestrator.cli.client_cmds import connection_args, settings_of
from sagaline.orchestrator.cli.command import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    add_json_flag,
    set_handler,
)
from sagaline.orchestrator.cli.status_view import summary, text
from sagaline.orchestrator.client import SagaClient, SagaNotFound, StreamEvent
from sagaline.orchestrator.core.errors import ConfigError
from sagaline.schemas.progress import ProgressReported
from sagaline.schemas.state import SagaState

__all__ = ["WatchPrinter", "register"]


def register(subparsers: Subparsers) -> None:
    """Add ``watch``."""
    parser = subparsers.add_parser(
        "watch",
        help="follow a saga live: state changes and step progress, then its final state",
        description="Print the saga's state changes (status, current node) and the progress "
        "its steps publish (ctx.progress: message, fraction, partial output) as they happen, "
        "then its final snapshot; exit 0 when it completed, 1 when it ended otherwise, "
        "7 on --timeout.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("saga_id")
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up after this many seconds"
    )
    connection_args(parser)
    add_json_flag(parser)
    set_handler(parser, _watch)


class WatchPrinter:
    """Writes stream events for a person (or as JSON lines)."""

    def __init__(self, out: TextIO, *, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self._partial_of: str | None = None  # the task whose partial output is being written

    def event(self, event: StreamEvent) -> None:
        if event.progress is not None:
            self.progress(event.progress)
        elif event.state is not None:
            self.state(event.state)
        self.out.flush()

    def _end_partial(self) -> None:
        if self._partial_of is not None:
            self.out.write("\n")
            self._partial_of = None

    def progress(self, p: ProgressReported) -> None:
        if self.as_json:
            self._json({"mode": "progress", **p.model_dump(mode="json")})
            return
        stamp = p.at.strftime("%H:%M:%S")
        if p.message is not None or p.fraction is not None:
            self._end_partial()
            done = f" {p.fraction:4.0%}" if p.fraction is not None else ""
            self.out.write(f"{stamp}  {p.step}{done}  {p.message or ''}".rstrip() + "\n")
        if p.partial:
            if self._partial_of != p.task_id:
                self._end_partial()
                self.out.write(f"{stamp}  {p.step} > ")
                self._partial_of = p.task_id
            self.out.write(p.partial.replace("\n", " "))

    def state(self, s: SagaState) -> None:
        if self.as_json:
            self._json({"mode": "state", **summary(s)})
            return
        self._end_partial()
        if s.is_terminal:
            self.out.write(text(s) + "\n")
            return
        node = f"{s.node} ({s.node_kind})" if s.node_kind else s.node or "-"
        self.out.write(f"{s.updated_at.strftime('%H:%M:%S')}  [{s.status}] at {node}\n")

    def _json(self, data: dict[str, Any]) -> None:
        self.out.write(json.dumps(data, sort_keys=True, default=str) + "\n")


def _watch(args: argparse.Namespace) -> int:
    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError("--timeout must be positive")
    printer = WatchPrinter(sys.stdout, as_json=bool(args.json))
    final: SagaState | None = None
    with SagaClient(settings_of(args), debug=args.debug) as client:
        current = client.status(args.saga_id)
        if current is None:
            raise SagaNotFound(
                f"no snapshot of saga {args.saga_id!r} on the state topic "
                "(not started, or its start was rejected: try `sagaline wait` for the reason)"
            )
        since = int(current.started_at.timestamp() * 1000)
        for event in client.stream(args.saga_id, timeout=args.timeout, since_ms=since):
            printer.event(event)
            if event.final:
                final = event.state
    return EXIT_OK if final is not None and final.status == "completed" else EXIT_FAILED
