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
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "Handler",
    "Subparsers",
    "add_json_flag",
    "emit",
    "set_handler",
]

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_USAGE = 64

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
