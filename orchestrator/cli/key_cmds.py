"""``sagaline keys``: the Ed25519 keys that sign commands, replies, tasks and state.

::

    sagaline keys create orchestrator           # a key pair for the signer "orchestrator"
    sagaline keys create worker --rotate        # a new key; the old public key still verifies
    sagaline keys list                          # signers and key ids of the keyring
    sagaline keys revoke worker 3f2a9c0d1b7e4a55 # remove one public key from the keyring

Keys live in ``SAGALINE_KEYS_DIR`` (default ``.sagaline/keys``; ``--dir`` overrides):
``NAME.key`` (private, owner-only) and ``NAME.KEYID.pub`` (public).  See docs/security.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sagaline.orchestrator.cli.command import (
    EXIT_CODES_HELP,
    EXIT_OK,
    Subparsers,
    add_json_flag,
    emit,
    set_handler,
)
from sagaline.orchestrator.core.errors import ConfigError
from sagaline.orchestrator.runtime.signing import (
    Keyring,
    create_key,
    private_key_path,
    revoke_key,
    valid_name,
)
from sagaline.orchestrator.runtime.signing_runtime import SigningConfig

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    """Add ``keys`` with ``create``, ``list`` and ``revoke``."""
    parser = subparsers.add_parser(
        "keys",
        help="create, list and revoke the keys that sign sagaline's records",
        description=__doc__,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="keys_command", metavar="<action>", required=True)
    create = actions.add_parser("create", help="make a signer's key pair")
    create.add_argument("name", help="the signer: a role (orchestrator, worker, ...) or a person")
    create.add_argument(
        "--rotate", action="store_true", help="replace an existing private key with a new one"
    )
    set_handler(create, _create)
    listing = actions.add_parser("list", help="the signers and key ids of the keyring")
    set_handler(listing, _list)
    revoke = actions.add_parser("revoke", help="remove one public key from the keyring")
    revoke.add_argument("name")
    revoke.add_argument("key_id")
    set_handler(revoke, _revoke)
    for action in (create, listing, revoke):
        action.add_argument("--dir", type=Path, help="the keyring (default: SAGALINE_KEYS_DIR)")
        add_json_flag(action)


def _directory(args: argparse.Namespace) -> Path:
    given: Path | None = args.dir
    return given if given is not None else SigningConfig.from_env().keys_dir


def _checked_name(name: str) -> str:
    if not valid_name(name):
        raise ConfigError(f"{name!r} cannot name a signer (letters, digits, _ and - only)")
    return name


def _create(args: argparse.Namespace) -> int:
    name, directory = _checked_name(args.name), _directory(args)
    if private_key_path(directory, name).exists() and not args.rotate:
        raise ConfigError(f"signer {name!r} already has a key; --rotate makes a new one")
    try:
        _, kid, _ = create_key(directory, name, rotate=args.rotate)
    except OSError as exc:
        raise ConfigError(f"cannot write the key of {name!r}: {exc.strerror}") from None
    what = "rotated" if args.rotate else "created"
    emit(
        args,
        {"signer": name, "key_id": kid, "directory": str(directory), "action": what},
        f"{what} key {name}/{kid} in {directory} (private key {name}.key, owner-only)",
    )
    return EXIT_OK


def _load(directory: Path) -> Keyring:
    try:
        return Keyring.load(directory)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the keyring in {directory}: {exc}") from None


def _list(args: argparse.Namespace) -> int:
    directory = _directory(args)
    ring = _load(directory)
    rows: list[dict[str, object]] = []
    lines: list[str] = []
    for name in ring.signers():
        ids = sorted(ring.keys[name])
        here = private_key_path(directory, name).exists()
        rows.append({"signer": name, "key_ids": ids, "private_key_here": here})
        lines.append(f"{name}: {', '.join(ids)}" + (" (private key here)" if here else ""))
    emit(args, {"directory": str(directory), "signers": rows}, "\n".join(lines) or "no keys")
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    name, directory = _checked_name(args.name), _directory(args)
    if not revoke_key(directory, name, args.key_id):
        known = ", ".join(sorted(_load(directory).keys.get(name, {}))) or "none"
        raise ConfigError(f"signer {name!r} has no key {args.key_id!r} (keys: {known})")
    emit(
        args,
        {"signer": name, "key_id": args.key_id, "action": "revoked"},
        f"revoked key {name}/{args.key_id}: records it signs no longer verify",
    )
    return EXIT_OK
