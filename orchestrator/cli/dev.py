"""``sagaline dev``: local Apache Kafka and PostgreSQL for development.

``up`` starts both (reusing running ones) and writes ``.sagaline/dev.env``, which every
other command reads through :class:`sagaline.orchestrator.config.Settings`; ``down`` stops them;
``status`` reports them; ``install`` fetches Kafka and installs PostgreSQL without
starting anything; ``smoke`` proves both work with a transactional round trip.
"""

from __future__ import annotations

import argparse

from sagaline.orchestrator.cli.command import EXIT_OK, Subparsers, add_json_flag, emit, set_handler
from sagaline.orchestrator.cli.progress_view import TaskProgress
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.devenv.kafka_dist import ensure_kafka_distribution, java_executable
from sagaline.orchestrator.devenv.postgres_dist import ensure_postgres_binaries
from sagaline.orchestrator.devenv.smoke import run_smoke
from sagaline.orchestrator.devenv.stack import ComponentStatus, DevStack, StackStatus

__all__ = ["register"]

EXIT_NOT_RUNNING = 1


def register(subparsers: Subparsers) -> None:
    """Add the ``dev`` command group."""
    dev = subparsers.add_parser(
        "dev",
        help="local Kafka and PostgreSQL",
        description="Local Apache Kafka (KRaft) and PostgreSQL for development and tests.",
    )
    commands = dev.add_subparsers(dest="dev_command", metavar="<dev command>", required=True)

    up = commands.add_parser("up", help="start Kafka and PostgreSQL, write .sagaline/dev.env")
    up.add_argument("--kafka-port", type=_port, help="broker port (default: previous or free)")
    up.add_argument("--postgres-port", type=_port, help="server port (default: previous or free)")
    up.add_argument(
        "--brokers", type=int, choices=(1, 3), help="Kafka nodes: 1 (default) or 3 (RF 3)"
    )
    up.add_argument(
        "--insecure",
        action="store_true",
        help="PLAINTEXT Kafka with no authorizer and trust PostgreSQL (default: SASL/SCRAM "
        "over TLS with ACLs, scram-sha-256; see docs/security.md)",
    )
    add_json_flag(up)
    set_handler(up, _up)

    down = commands.add_parser("down", help="stop Kafka and PostgreSQL (data is kept)")
    down.add_argument("--purge", action="store_true", help="also delete their data")
    add_json_flag(down)
    set_handler(down, _down)

    status = commands.add_parser("status", help="report Kafka and PostgreSQL (exit 1 if down)")
    add_json_flag(status)
    set_handler(status, _status)

    install = commands.add_parser(
        "install", help="fetch Kafka from Maven Central, install PostgreSQL if absent"
    )
    add_json_flag(install)
    set_handler(install, _install)

    smoke = commands.add_parser(
        "smoke", help="transactional round trip on Kafka and a PostgreSQL transaction"
    )
    add_json_flag(smoke)
    set_handler(smoke, _smoke)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


def _up(args: argparse.Namespace) -> int:
    with TaskProgress():
        status = DevStack().up(
            kafka_port=args.kafka_port,
            postgres_port=args.postgres_port,
            brokers=args.brokers,
            insecure=args.insecure,
        )
    emit(args, status.as_dict(), _describe(status, headline="dev environment is up"))
    return EXIT_OK


def _down(args: argparse.Namespace) -> int:
    stack = DevStack()
    before = stack.status()
    running = [c for c in (before.kafka, before.postgres) if c is not None and c.running]
    status = stack.down(purge=args.purge)
    data = {**status.as_dict(), "stopped": [c.name for c in running], "purged": args.purge}
    if not running:
        text = "nothing to stop: the dev environment is not running"
        if args.purge and before.kafka is not None:
            text += " (its data was deleted)"
    else:
        names = " and ".join(f"{c.name} (pid {','.join(map(str, c.pids))})" for c in running)
        text = f"stopped {names}" + ("; data deleted" if args.purge else "; data kept")
    emit(args, data, text)
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    status = DevStack().status()
    headline = "dev environment is up" if status.all_running else "dev environment is not running"
    emit(args, status.as_dict(), _describe(status, headline=headline))
    return EXIT_OK if status.all_running else EXIT_NOT_RUNNING


def _install(args: argparse.Namespace) -> int:
    java = java_executable()
    with TaskProgress():
        kafka = ensure_kafka_distribution()
        postgres = ensure_postgres_binaries()
    data = {
        "java": java,
        "kafka_version": kafka.version,
        "kafka_classpath": str(kafka.libs_dir),
        "postgres_version": postgres.major,
        "postgres_bin": str(postgres.bin_dir),
    }
    text = (
        f"kafka {kafka.version}: {kafka.libs_dir}\n"
        f"postgresql {postgres.major}: {postgres.bin_dir}\n"
        f"java: {java}"
    )
    emit(args, data, text)
    return EXIT_OK


def _smoke(args: argparse.Namespace) -> int:
    report = run_smoke(Settings.from_env(require_database=True))
    data = {"steps": report.steps, "seconds": round(report.seconds, 3), "ok": True}
    text = "\n".join(report.steps) + f"\nsmoke check passed in {report.seconds:.1f} s"
    emit(args, data, text)
    return EXIT_OK


def _describe(status: StackStatus, *, headline: str) -> str:
    lines = [headline]
    for component in (status.kafka, status.postgres):
        if component is not None:
            lines.append(_component_line(component))
    lines.append(f"settings file: {status.env_file}")
    return "\n".join(lines)


def _component_line(component: ComponentStatus) -> str:
    state = "running" if component.running else "stopped"
    version = f" {component.version}" if component.version else ""
    pids = ",".join(str(p) for p in component.pids) or "-"
    security = f" [{component.security}]" if component.security else ""
    return (
        f"  {component.name}{version}: {state} at {component.address}{security} "
        f"(pid {pids}; data {component.data_dir}; log {component.log_file})"
    )
