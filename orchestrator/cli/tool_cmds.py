"""``sagaline schemas …`` and ``sagaline sagas tables``: the
maintainer's tools that used to be ``python -m`` entry points of their packages.

* ``schemas generate [--check] [--dir DIR]``: regenerate the ``.avsc`` files from
  the pydantic records (``--check``: exit 1 when a committed file is stale).
* ``schemas check-compat [--release VERSION] [--released-dir DIR]``: check that the
  current records read every released version (``--release``: freeze them).
* ``sagas tables [--schema NAME]``: create the reference sagas' tables.

(``sagaline chaos …`` lives in :mod:`sagaline.orchestrator.cli.chaos_cmds`.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sagaline.orchestrator.cli.command import Subparsers, set_handler

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    _schemas(subparsers)
    sagas = subparsers.add_parser("sagas", help="the reference sagas")
    sagas_cmds = sagas.add_subparsers(dest="sagas_command", metavar="<command>", required=True)
    tables = sagas_cmds.add_parser("tables", help="create the reference sagas' tables")
    tables.add_argument("--schema", help="schema (default: $SAGALINE_APP_SCHEMA or sagaline_app)")
    tables.add_argument("--database-url", help="PostgreSQL URL (default: env / dev file)")
    set_handler(tables, _sagas_tables)


def _schemas(subparsers: Subparsers) -> None:
    from sagaline.schemas.avrogen import AVRO_DIR
    from sagaline.schemas.registry import RELEASED_DIR

    schemas = subparsers.add_parser("schemas", help="the Avro wire schemas")
    cmds = schemas.add_subparsers(dest="schemas_command", metavar="<command>", required=True)
    generate = cmds.add_parser("generate", help="regenerate the .avsc files from the records")
    generate.add_argument("--check", action="store_true", help="exit 1 if any .avsc is stale")
    generate.add_argument("--dir", type=Path, default=AVRO_DIR, help="output directory")
    set_handler(generate, _schemas_generate)
    compat = cmds.add_parser(
        "check-compat", help="check that the current records read every released version"
    )
    compat.add_argument("--release", metavar="VERSION", help="freeze the current schemas")
    compat.add_argument("--released-dir", type=Path, default=RELEASED_DIR)
    set_handler(compat, _schemas_compat)


def _schemas_generate(args: argparse.Namespace) -> int:
    from sagaline.schemas.avrogen import generate

    return generate(args.dir, check=args.check)


def _schemas_compat(args: argparse.Namespace) -> int:
    from sagaline.schemas.compat import check_compat

    return check_compat(args.release, args.released_dir)


def _sagas_tables(args: argparse.Namespace) -> int:
    from sagaline.sagas.tables import create_tables

    return create_tables(args.schema, args.database_url)
