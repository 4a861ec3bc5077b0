"""``sagaline deadletters list | replay``: what was refused, and why; re-produce one.

``list`` prints the dead letters (oldest first; ``--saga-id``, ``--type``,
``--since``, ``--limit`` the newest N) with their reason and source.  ``replay
OFFSET`` re-produces that letter's original to its source topic once its cause is
fixed (the same key, value and headers; ``--by-key``: to the partition its key
gives, for a ``WrongPartition`` letter) and prints where Kafka stored it.
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
    parse_since,
    positive_int,
    set_handler,
)
from sagaline.orchestrator.client.deadletters import (
    FoundLetter,
    find_dead_letter,
    read_dead_letters,
    replay_dead_letter,
)

__all__ = ["register"]


def _offset(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"an offset is a whole number, not {text!r}")
    return int(text)


def register(subparsers: Subparsers) -> None:
    """Add ``deadletters list`` and ``deadletters replay``."""
    group = subparsers.add_parser(
        "deadletters", help="list the dead letters, or replay one once its cause is fixed"
    )
    commands = group.add_subparsers(dest="deadletters_command", required=True)
    listing = commands.add_parser(
        "list",
        help="the dead letters, oldest first, with their reason and source",
        description="Read <prefix>.deadletter to its end and print each letter: when, who "
        "refused it, the error type and reason, the saga id (the original's key) and where "
        "the original was (topic[partition]@offset).",
    )
    listing.add_argument("--saga-id", help="only the letters of this saga (the original's key)")
    listing.add_argument("--type", dest="error_type", help="only this error type")
    listing.add_argument(
        "--since", type=parse_since, help="only those rejected since (ISO 8601, or an age: 2h)"
    )
    listing.add_argument("--limit", type=positive_int, help="only the newest N")
    connection_args(listing)
    add_json_flag(listing)
    set_handler(listing, _list)

    replay = commands.add_parser(
        "replay",
        help="re-produce a dead letter's original to its source topic",
        description="Re-produce the original of the dead letter at OFFSET (of "
        "<prefix>.deadletter) to its source topic: the same key, value and headers, to the "
        "source partition (--by-key: to the partition its key gives). Fix the cause first: "
        "an original refused for its content is refused again. A letter whose original was "
        "cut to fit is not replayable (its whole value is only at its source offset).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("offset", type=_offset, help="the dead letter's offset")
    replay.add_argument(
        "--by-key", action="store_true", help="to the partition the key gives (WrongPartition)"
    )
    connection_args(replay)
    add_json_flag(replay)
    set_handler(replay, _replay)


def _line(found: FoundLetter) -> str:
    where = f"@{found.offset}"
    if found.letter is None:
        return f"{where}  (not a dead letter: {found.error})"
    letter = found.letter
    when = letter.rejected_at.strftime("%Y-%m-%d %H:%M:%S")
    saga = found.saga_id or "-"
    source = f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}"
    cut = " (original cut to fit)" if letter.truncated else ""
    return (
        f"{where}  {when}  {letter.error_type} by {letter.rejected_by}  saga {saga}  "
        f"from {source}{cut}\n      {letter.reason}"
    )


def _list(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    found = read_dead_letters(
        settings.kafka_bootstrap_servers,
        settings.topics,
        saga_id=args.saga_id,
        error_type=args.error_type,
        since=args.since,
    )
    total = len(found)
    if args.limit is not None:
        found = found[-args.limit :]
    data = {
        "topic": settings.topics.deadletter,
        "count": total,
        "letters": [f.as_dict() for f in found],
    }
    shown = f" (the newest {len(found)} shown)" if len(found) < total else ""
    lines = [_line(f) for f in found]
    text = "\n".join([*lines, f"{total} dead letter(s) in {settings.topics.deadletter}{shown}"])
    emit(args, data, text)
    return EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    bootstrap = settings.kafka_bootstrap_servers
    letter = find_dead_letter(bootstrap, settings.topics, args.offset)
    stored = replay_dead_letter(bootstrap, letter, by_key=args.by_key)
    where = f"{stored.topic}[{stored.partition}]@{stored.offset}"
    data = {
        "dead_letter_offset": args.offset,
        "topic": stored.topic,
        "partition": stored.partition,
        "offset": stored.offset,
        "error_type": letter.error_type,
    }
    emit(args, data, f"replayed dead letter @{args.offset} ({letter.error_type}) to {where}")
    return EXIT_OK
