"""The commands that write: ``start``, ``signal``, ``approve``, ``reject``, ``cancel``,
``pause``, ``resume``, ``retry-step`` and ``skip-step``.

Each writes one Avro command to the commands topic and prints what was sent;
Kafka confirms the write within 10 s or the command fails with exit 3 and
"nothing was sent".  With ``--wait`` (the default on a terminal) it then waits
for the orchestrator's verdict and prints it: accepted (exit 0), ignored (4),
unknown saga (5), rejected / dead-lettered with the reason (6), no verdict
within ``--timeout`` (7).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sagaline.orchestrator.cli.command import (
    EXIT_CODES_HELP,
    EXIT_IGNORED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_UNKNOWN_SAGA,
    Subparsers,
    add_json_flag,
    emit,
    set_handler,
)
from sagaline.orchestrator.cli.loading import load_registry, parse_data
from sagaline.orchestrator.client import Receipt, SagaClient, Verdict
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.core.errors import ConfigError

__all__ = ["connection_args", "register", "settings_of"]

_VERDICT_CODES = {
    "accepted": EXIT_OK,
    "ignored": EXIT_IGNORED,
    "unknown_saga": EXIT_UNKNOWN_SAGA,
    "dead_lettered": EXIT_REJECTED,
}


def connection_args(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap`` and ``--prefix``."""
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: env / dev file)")
    parser.add_argument("--prefix", help="topic prefix (default: env or 'sagaline')")


def settings_of(args: argparse.Namespace) -> Settings:
    """The connection settings of a parsed command line."""
    return Settings.from_env(kafka_bootstrap_servers=args.bootstrap, topic_prefix=args.prefix)


def _writer(subparsers: Subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=help_text + ". Prints what was sent and, with --wait, the orchestrator's "
        "verdict. Kafka must confirm the write within 10 s, else nothing was sent (exit 3).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wait for the orchestrator's verdict (default: on a terminal)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the verdict (default 30)"
    )
    connection_args(parser)
    add_json_flag(parser)
    return parser


def register(subparsers: Subparsers) -> None:
    """Add the commands that write to the commands topic."""
    start = _writer(subparsers, "start", "start a saga (idempotent by --id)")
    start.add_argument("--app", required=True, help="module:attribute of a SagaRegistry")
    start.add_argument("--type", required=True, dest="saga_type", help="saga type name")
    start.add_argument("--version", type=int, help="definition version (default: latest)")
    start.add_argument("--data", required=True, help="the saga data as JSON")
    start.add_argument("--id", dest="saga_id", help="saga id (default: a new UUID)")
    start.add_argument("--by", help="who requests it")
    set_handler(start, _start)

    signal = _writer(subparsers, "signal", "deliver a signal to a waiting saga")
    signal.add_argument("saga_id")
    signal.add_argument("name", help="the wait's name")
    signal.add_argument("--by", required=True)
    signal.add_argument("--note")
    set_handler(signal, _signal)

    for verb, approved in (("approve", True), ("reject", False)):
        p = _writer(subparsers, verb, f"{verb} a saga's open approval")
        p.add_argument("saga_id")
        p.add_argument("wait_name", metavar="wait", help="the approval's name")
        p.add_argument(
            "--by",
            required=True,
            help="the approver's identity; with signing on, the journal records the verified "
            "signer (SAGALINE_SIGNER, else your Kafka user) and this text only as a note "
            "('admin for alice')",
        )
        p.add_argument("--note")
        if approved:
            p.add_argument(
                "--seen",
                dest="seen_sha256",
                help="SHA-256 of the data you were shown (sagaline approval SAGA WAIT prints it)",
            )
        p.set_defaults(approved=approved)
        set_handler(p, _approval)

    for verb in ("cancel", "pause", "resume"):
        p = _writer(subparsers, verb, f"{verb} a saga")
        p.add_argument("saga_id")
        p.add_argument("--by", required=True)
        p.add_argument("--reason")
        p.set_defaults(verb=verb)
        set_handler(p, _operator)

    for verb in ("retry-step", "skip-step"):
        p = _writer(subparsers, verb, f"operator: {verb.replace('-', ' ')}")
        p.add_argument("saga_id")
        p.add_argument("step")
        p.add_argument("--by", required=True)
        p.add_argument("--reason")
        p.set_defaults(verb=verb)
        set_handler(p, _step_operator)


def _client(args: argparse.Namespace) -> SagaClient:
    return SagaClient(settings_of(args), debug=getattr(args, "debug", False))


def _waits(args: argparse.Namespace) -> bool:
    if args.timeout <= 0:
        raise ConfigError("--timeout must be positive")
    return bool(args.wait) if args.wait is not None else sys.stdout.isatty()


def _report(args: argparse.Namespace, client: SagaClient, receipt: Receipt, sent: str) -> int:
    """Print what was sent and, with ``--wait``, the verdict; return the exit code."""
    data: dict[str, Any] = {"sent": receipt.as_dict()}
    lines = [f"sent {sent} (stored at {receipt.topic}[{receipt.partition}]@{receipt.offset})"]
    if not _waits(args):
        emit(args, data, lines[0])
        return EXIT_OK
    verdict = client.verdict(receipt, timeout=args.timeout)
    data["verdict"] = verdict.as_dict()
    lines.append(_verdict_line(verdict, receipt.saga_id))
    emit(args, data, "\n".join(lines))
    return _verdict_code(args, verdict, receipt.saga_id)


def _verdict_code(args: argparse.Namespace, verdict: Verdict, saga_id: str) -> int:
    """The exit code of a verdict; a refusal is repeated on stderr as one line."""
    code = _VERDICT_CODES[verdict.outcome]
    if code != EXIT_OK and not args.json:
        print(f"sagaline: {_verdict_line(verdict, saga_id)}", file=sys.stderr)
    return code


def _verdict_line(verdict: Verdict, saga_id: str) -> str:
    if verdict.outcome == "accepted":
        return f"orchestrator: accepted ({verdict.detail})"
    if verdict.outcome == "ignored":
        return f"orchestrator: ignored: {verdict.detail}"
    if verdict.outcome == "unknown_saga":
        return f"orchestrator: unknown saga {saga_id!r} (dead-lettered: {verdict.detail})"
    return f"orchestrator: rejected (dead-lettered): {verdict.detail}"


def _start(args: argparse.Namespace) -> int:
    registry = load_registry(args.app)
    definition = registry.get(args.saga_type, args.version)
    data = parse_data(args.data, definition.data_type)
    with _client(args) as client:
        handle = client.start(definition, data, saga_id=args.saga_id, requested_by=args.by)
        if handle.receipt is None:
            text = f"{handle.saga_id}\nsaga {handle.saga_id!r} was already started with this input"
            emit(args, {"saga_id": handle.saga_id, "already_started": True}, text)
            return EXIT_OK
        if not _waits(args):
            emit(
                args, {"saga_id": handle.saga_id, "sent": handle.receipt.as_dict()}, handle.saga_id
            )
            return EXIT_OK
        verdict = client.verdict(handle.receipt, timeout=args.timeout)
    data_out = {"saga_id": handle.saga_id, "verdict": verdict.as_dict()}
    emit(args, data_out, f"{handle.saga_id}\n{_verdict_line(verdict, handle.saga_id)}")
    return _verdict_code(args, verdict, handle.saga_id)


def _signal(args: argparse.Namespace) -> int:
    with _client(args) as client:
        receipt = client.signal(args.saga_id, args.name, by=args.by, note=args.note)
        return _report(args, client, receipt, f"signal {args.name!r} to saga {args.saga_id!r}")


def _approval(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.approved:
            receipt = client.approve(
                args.saga_id,
                args.wait_name,
                by=args.by,
                note=args.note,
                seen_sha256=args.seen_sha256,
            )
        else:
            receipt = client.reject(args.saga_id, args.wait_name, by=args.by, note=args.note)
        verb = "approval" if args.approved else "rejection"
        sent = f"{verb} of {args.wait_name!r} for saga {args.saga_id!r} by {args.by}"
        return _report(args, client, receipt, sent)


def _operator(args: argparse.Namespace) -> int:
    with _client(args) as client:
        action = {"cancel": client.cancel, "pause": client.pause, "resume": client.resume}
        receipt = action[args.verb](args.saga_id, by=args.by, reason=args.reason)
        return _report(args, client, receipt, f"{args.verb} of saga {args.saga_id!r} by {args.by}")


def _step_operator(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.verb == "retry-step":
            receipt = client.retry_step(args.saga_id, args.step, by=args.by, reason=args.reason)
        else:
            receipt = client.skip_step(args.saga_id, args.step, by=args.by, reason=args.reason)
        sent = f"{args.verb} {args.step!r} of saga {args.saga_id!r} by {args.by}"
        return _report(args, client, receipt, sent)
