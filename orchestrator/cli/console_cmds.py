"""``sagaline ui``: serve the web console; ``sagaline ui add-user``: add a user to its users file.

    sagaline ui --users console-users.toml --app sagaline.sagas:REGISTRY --port 8765
    sagaline ui add-user --users console-users.toml grace --role approver --saga-types refund

See docs/console.md.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from pathlib import Path

from sagaline.orchestrator.cli.command import EXIT_OK, Subparsers, set_handler
from sagaline.orchestrator.cli.config_cmds import add_process_options, with_process_services
from sagaline.orchestrator.cli.loading import load_registry
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.console import ROLES, ConsoleOptions, add_user, load_users, serve
from sagaline.orchestrator.console.redact import redact_url
from sagaline.orchestrator.core.errors import ConfigError

__all__ = ["register"]

DEFAULT_PORT = 8765


def register(subparsers: Subparsers) -> None:
    """Add ``ui`` and ``ui add-user``."""
    ui = subparsers.add_parser(
        "ui",
        help="serve the web console (approval inbox, sagas, live timelines)",
        description="Serve the web console: the approval inbox, the saga list and each saga's "
        "timeline, live. Users and roles come from --users (see `sagaline ui add-user`).",
    )
    ui.add_argument("--users", type=Path, help="the users file (TOML)")
    ui.add_argument("--app", help="module:attribute of a SagaRegistry (for the diagrams)")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ui.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    ui.add_argument("--bootstrap", help="Kafka bootstrap servers (default: env / dev file)")
    ui.add_argument("--prefix", help="topic prefix (default: env or 'sagaline')")
    ui.add_argument("--database-url", help="PostgreSQL URL of the read model (default: env)")
    ui.add_argument("--db-schema", default="sagaline", help="schema of the read model")
    ui.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".sagaline"),
        help="where a generated session secret is kept (default .sagaline)",
    )
    add_process_options(ui)
    set_handler(ui, with_process_services("console", _serve))
    commands = ui.add_subparsers(dest="ui_command", metavar="<command>")
    add = commands.add_parser("add-user", help="add or replace a user in the users file")
    add.add_argument("--users", dest="add_users", type=Path, required=True, help="users file")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="viewer")
    add.add_argument(
        "--saga-types",
        default="*",
        help="approver: comma-separated saga types they may approve ('*' for all; default *)",
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    set_handler(add, _add_user)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise ConfigError("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the two passwords differ")
    return first


def _add_user(args: argparse.Namespace) -> int:
    types = [t.strip() for t in args.saga_types.split(",") if t.strip()]
    new = add_user(args.add_users, args.name, _password(args.password_stdin), args.role, types)
    scope = f" for {', '.join(types)}" if args.role == "approver" else ""
    print(f"{'added' if new else 'replaced'} {args.name} ({args.role}{scope}) in {args.add_users}")
    return EXIT_OK


def _port(text: str) -> int:
    """A TCP port, 1-65535 (argparse shows the message and exits 2 otherwise)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, not {port}")
    return port


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _serve(args: argparse.Namespace) -> int:
    if args.users is None:
        raise ConfigError("--users FILE is required (create it with `sagaline ui add-user`)")
    users = load_users(args.users)
    settings = Settings.from_env(
        kafka_bootstrap_servers=args.bootstrap,
        database_url=args.database_url,
        topic_prefix=args.prefix,
    )
    registry = load_registry(args.app) if args.app else None
    _check_port(args.host, args.port)
    options = ConsoleOptions(
        settings=settings,
        users=users,
        registry=registry,
        db_schema=args.db_schema,
        state_dir=args.state_dir,
        host=args.host,
        port=args.port,
    )
    database = redact_url(settings.database_url) if settings.database_url else "none"
    url = f"http://{args.host}:{args.port}/"
    print(
        f"sagaline console: {url}  ({len(users.users)} user(s) from {args.users}; "
        f"topics {settings.topics.prefix}.*; read model {database} schema {args.db_schema})",
        flush=True,
    )
    serve(options)
    return EXIT_OK
