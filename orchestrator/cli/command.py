"""Shared pieces for ``sagaline`` command modules.

A command module exposes ``register(subparsers: Subparsers) -> None``. It adds its
parsers and binds each leaf command to a handler with ``set_handler(parser, fn)``;
a handler takes the parsed ``argparse.Namespace`` and returns the exit code.
Handlers raise :class:`~sagaline.orchestrator.core.errors.SagalineError` for expected failures;
``main`` prints them as one line and exits with :data:`EXIT_ERROR`.
Commands that report data call :func:`add_json_flag` and print through :func:`emit`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_IGNORED",
    "EXIT_INTERNAL",
    "EXIT_KAFKA",
    "EXIT_NO_VERDICT",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_UNKNOWN_SAGA",
    "EXIT_USAGE",
    "Handler",
    "Subparsers",
    "add_json_flag",
    "emit",
    "parse_since",
    "positive_int",
    "set_handler",
]

EXIT_OK = 0
#: the saga ended otherwise than completed (``wait``), a check failed, nothing runs
EXIT_FAILED = 1
#: a mistake the user can fix (bad option, bad --data, unknown --app, ...)
EXIT_ERROR = 2
#: Kafka did not answer (or did not confirm a write): see the message
EXIT_KAFKA = 3
#: the orchestrator ignored the command (the saga is not waiting there, already done, ...)
EXIT_IGNORED = 4
#: the orchestrator knows no such saga
EXIT_UNKNOWN_SAGA = 5
#: the orchestrator dead-lettered the command (or refused the start): the reason is printed
EXIT_REJECTED = 6
#: sent, but no verdict (or not the awaited status) within --timeout
EXIT_NO_VERDICT = 7
#: a bug in sagaline: one line, and the traceback with --debug
EXIT_INTERNAL = 70
EXIT_USAGE = 64

EXIT_CODES_HELP = """exit codes:
  0  done (the orchestrator accepted the command; the saga completed)
  1  the saga ended otherwise than completed; a check failed
  2  a mistake in the command (bad option, --data, --app): fix it and run again
  3  Kafka did not answer within 10 s: nothing was sent (or the write was not confirmed)
  4  the orchestrator ignored the command (not waiting there, already finished, ...)
  5  the orchestrator knows no such saga
  6  the orchestrator rejected (dead-lettered) the command; the reason is printed
  7  no verdict from the orchestrator within --timeout (is it running?)
 70  an unexpected error in sagaline (run with --debug for the traceback)"""

Handler = Callable[[argparse.Namespace], int]
# The object ``ArgumentParser.add_subparsers()`` returns.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def set_handler(parser: argparse.ArgumentParser, handler: Handler) -> None:
    """Make ``handler`` run when ``parser``'s command is chosen."""
    parser.set_defaults(handler=handler)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--json``: print one JSON document instead of text."""
    parser.add_argument("--json", action="store_true", help="print a JSON document instead of text")


def emit(args: argparse.Namespace, data: Mapping[str, Any], text: str) -> None:
    """Print ``data`` as JSON when ``--json`` was given, else ``text``."""
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO 8601 time (UTC when no offset is given) or an age like ``2h``."""
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        try:
            delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
            return (now or datetime.now(UTC)) - delta
        except OverflowError:
            raise argparse.ArgumentTypeError(f"--since {value!r} reaches before year 1") from None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since wants an ISO 8601 time (2026-03-15T09:00:00Z) or an age (30m, 2h, 7d), "
            f"got {value!r}"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def positive_int(value: str) -> int:
    """An option's value that must be a whole number above 0."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number
