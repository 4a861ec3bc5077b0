"""``sagaline demo``: the reference sagas end to end, with crashes, then the audit.

Uses Kafka and PostgreSQL from the environment (``KAFKA_BOOTSTRAP_SERVERS``,
``DATABASE_URL``) or from ``.sagaline/dev.env``; when neither names them it
brings up the local development stack first (like ``sagaline dev up``).
Exits 0 when every check holds, 1 when one fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sagaline.orchestrator.cli.command import EXIT_OK, Subparsers, add_json_flag, emit, set_handler
from sagaline.orchestrator.cli.progress_view import TaskProgress
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.core.errors import ConfigError
from sagaline.orchestrator.demo.report import sagaline_on_path

__all__ = ["EXIT_CHECK_FAILED", "register"]

EXIT_CHECK_FAILED = 1


def register(subparsers: Subparsers) -> None:
    """Add the ``demo`` command."""
    demo = subparsers.add_parser(
        "demo",
        help="run the reference sagas with crashes and print the audit",
        description=(
            "Bring up Kafka and PostgreSQL if needed, run orchestrator, workers and relay as "
            "separate processes, start refunds, research agents and lead enrichments, SIGKILL "
            "a worker and the orchestrator mid-flight, approve/reject/let time out, then check "
            "outcomes, side effects and the journal audit."
        ),
    )
    demo.add_argument("--refunds", type=_count, default=10, help="refund sagas (default 10)")
    demo.add_argument("--research", type=_count, default=3, help="research agents (default 3)")
    demo.add_argument(
        "--enrichments", type=_count, default=3, help="lead enrichment sagas (default 3)"
    )
    demo.add_argument("--workers", type=_positive, default=2, help="worker processes (default 2)")
    demo.add_argument("--partitions", type=_positive, default=3, help="partitions per topic")
    demo.add_argument("--no-chaos", action="store_true", help="do not SIGKILL anything")
    demo.add_argument("--timeout-s", type=float, default=180.0, help="give up after this long")
    demo.add_argument("--app-schema", default="sagaline_demo", help="schema of business tables")
    demo.add_argument("--worker-schema", default="sagaline", help="schema of worker tables")
    demo.add_argument("--prefix", help="topic prefix (default: a fresh one per run)")
    demo.add_argument(
        "--log-dir", type=Path, default=Path(".sagaline/demo"), help="process logs go here"
    )
    add_json_flag(demo)
    set_handler(demo, _demo)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {value}")
    return value


def _settings() -> Settings:
    try:
        return Settings.from_env(require_database=True)
    except ConfigError:
        from sagaline.orchestrator.devenv.stack import DevStack

        print("no Kafka/PostgreSQL configured: starting the local dev stack", file=sys.stderr)
        with TaskProgress():
            DevStack().up()
        return Settings.from_env(require_database=True)


def _demo(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.demo.run import DemoOptions, run_demo

    out = sys.stderr if args.json else sys.stdout

    def progress(message: str) -> None:
        print(f"demo: {message}", file=out, flush=True)

    settings = _settings()
    options = DemoOptions(
        refunds=args.refunds,
        research=args.research,
        enrichments=args.enrichments,
        workers=args.workers,
        partitions=args.partitions,
        chaos=not args.no_chaos,
        timeout_s=args.timeout_s,
        worker_schema=args.worker_schema,
        app_schema=args.app_schema,
        prefix=args.prefix,
        log_dir=args.log_dir,
    )
    result = run_demo(settings, options, progress)
    sagaline = sagaline_on_path()
    emit(args, result.as_dict(), result.render(sagaline) + "\n\n" + _still_running(settings))
    return EXIT_OK if result.ok else EXIT_CHECK_FAILED


def _still_running(settings: Settings) -> str:
    """What the demo leaves running, and how to stop it."""
    from sagaline.orchestrator.devenv.stack import DevStack

    status = DevStack().status()
    ours = status.kafka is not None and status.kafka.address == settings.kafka_bootstrap_servers
    if ours and status.all_running:
        return (
            f"still running: the dev Kafka ({settings.kafka_bootstrap_servers}) and PostgreSQL, "
            "for the commands above and the next run; the demo's orchestrators, workers and "
            "relays have stopped. Stop Kafka and PostgreSQL with `make down` "
            f"(or `{sagaline_on_path()} dev down`)."
        )
    return (
        f"the demo's own processes have stopped; Kafka ({settings.kafka_bootstrap_servers}) "
        "and PostgreSQL came from your environment and keep running."
    )
