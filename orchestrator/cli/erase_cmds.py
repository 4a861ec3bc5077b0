"""``sagaline erase SAGA`` and ``sagaline kek rotate|list``: crypto-shredding and the KEKs.

``erase`` destroys the saga's data key (a tombstone on ``<prefix>.keys``): the
journal stays as it is and its hash chain still verifies, but every personal
field of the saga reads ``⟨erased⟩`` from then on, in every process, for ever.

``kek rotate`` adds a new key-encryption key to the key file and re-wraps every
data key with it (the old KEKs stay in the file, so processes that have not
reloaded it keep working; ``--retire`` drops them once the re-wrap is done).
With ``SAGALINE_KEK`` set, the KEKs come from the environment: ``rotate``
re-wraps every data key with its first (current) entry and changes no file.
"""

from __future__ import annotations

import argparse
import os

from sagaline.orchestrator.cli.client_cmds import connection_args, settings_of
from sagaline.orchestrator.cli.command import (
    EXIT_CODES_HELP,
    EXIT_OK,
    Subparsers,
    add_json_flag,
    emit,
    set_handler,
)
from sagaline.orchestrator.core.errors import SagalineError
from sagaline.orchestrator.runtime.data_keys import (
    KEK_ENV,
    DataKeyError,
    DataKeyStore,
    Keyring,
    kek_file_path,
    keys_topic,
    load_keyring,
    new_kek_in_file,
    write_keyring,
)

__all__ = ["NothingToErase", "register"]


class NothingToErase(SagalineError):
    """The saga has no data key: it never had personal fields, or it is erased already."""


def register(subparsers: Subparsers) -> None:
    """Add ``erase`` and ``kek``."""
    erase = subparsers.add_parser(
        "erase",
        help="destroy a saga's data key: its personal fields become unreadable for ever",
        description=__doc__,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    erase.add_argument("saga_id", help="the saga whose personal data to erase")
    connection_args(erase)
    add_json_flag(erase)
    set_handler(erase, _erase)

    kek = subparsers.add_parser(
        "kek",
        help="rotate and list the key-encryption keys that wrap the data keys",
        description=__doc__,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = kek.add_subparsers(dest="kek_command", metavar="<action>", required=True)
    rotate = actions.add_parser("rotate", help="new KEK; re-wrap every data key with it")
    rotate.add_argument(
        "--retire", action="store_true", help="then drop the older KEKs from the key file"
    )
    connection_args(rotate)
    add_json_flag(rotate)
    set_handler(rotate, _rotate)
    listing = actions.add_parser("list", help="the KEK ids (never the keys) and the current one")
    add_json_flag(listing)
    set_handler(listing, _list)


def _store(args: argparse.Namespace) -> DataKeyStore:
    settings = settings_of(args)
    return DataKeyStore(settings.kafka_bootstrap_servers, keys_topic(settings.topics))


def _erase(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        had = store.erase(args.saga_id) if _has_key(store, args.saga_id) else False
    finally:
        store.close()
    if not had:
        raise NothingToErase(
            f"saga {args.saga_id!r} has no data key in {store.topic}: it has no personal "
            "fields, or it is erased already"
        )
    text = (
        f"erased the data key of saga {args.saga_id}: its personal fields are unreadable "
        "from now on; its journal is unchanged"
    )
    emit(args, {"saga_id": args.saga_id, "erased": True, "topic": store.topic}, text)
    return EXIT_OK


def _has_key(store: DataKeyStore, saga_id: str) -> bool:
    return saga_id in store.saga_ids()


def _rotate(args: argparse.Namespace) -> int:
    from_env = bool(os.environ.get(KEK_ENV))
    if from_env:
        if args.retire:
            raise DataKeyError(f"--retire edits the key file; the KEKs come from {KEK_ENV}")
        ring = load_keyring()
    else:
        ring, _ = new_kek_in_file()
    store = _store(args)
    try:
        count = store.rewrap(ring)
    finally:
        store.close()
    retired: list[str] = []
    if args.retire:
        retired = sorted(k for k in ring.keys if k != ring.current)
        write_keyring(
            kek_file_path(), Keyring(ring.current, {ring.current: ring.keys[ring.current]})
        )
    where = KEK_ENV if from_env else str(kek_file_path())
    text = f"re-wrapped {count} data key(s) with KEK {ring.current} ({where})"
    if retired:
        text += f"; retired {', '.join(retired)}"
    elif len(ring.keys) > 1 and not from_env:
        text += "; older KEKs kept until `sagaline kek rotate --retire`"
    data = {"current": ring.current, "rewrapped": count, "retired": retired, "source": where}
    emit(args, data, text)
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    ring = load_keyring()
    source = KEK_ENV if os.environ.get(KEK_ENV) else str(kek_file_path())
    ids = sorted(ring.keys)
    text = "\n".join(f"{'*' if k == ring.current else ' '} {k}" for k in ids)
    emit(args, {"current": ring.current, "keks": ids, "source": source}, f"{text}\n({source})")
    return EXIT_OK
