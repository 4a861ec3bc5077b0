"""``sagaline config``: the effective settings, secrets redacted; and the options every
long-running process shares.

Every ``run`` command (orchestrator, worker, relay, projection, ``ui``) takes
:func:`add_process_options` and is wrapped by :func:`with_process_services`,
which, before the command runs: passes the librdkafka settings through to every
Kafka client (``SAGALINE_KAFKA_CONFIG_FILE``, ``SAGALINE_KAFKA_CONFIG``,
``--kafka-config-file``, ``--kafka-config``, later ones winning), exports spans
over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, and serves Prometheus
metrics on ``--metrics-port`` (default ``SAGALINE_METRICS_PORT``, else 0 = off),
with the consumer lag of the process's group.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sagaline.orchestrator.cli.command import Handler, Subparsers, add_json_flag, emit, set_handler
from sagaline.orchestrator.config import (
    EnvSettings,
    KafkaValue,
    Settings,
    dev_env_path,
    read_kafka_config_file,
)
from sagaline.orchestrator.console.redact import REDACTED, is_secret_name, redact_url
from sagaline.orchestrator.core.errors import ConfigError
from sagaline.orchestrator.runtime.kafka_config import set_passthrough
from sagaline.orchestrator.runtime.metrics import LagMonitor, serve_metrics
from sagaline.orchestrator.runtime.telemetry import configure_tracing

__all__ = [
    "LagSpec",
    "add_process_options",
    "kafka_passthrough",
    "redact_kafka",
    "register",
    "with_process_services",
]

#: the (unstarted) lag monitor of a process's consumer group
LagSpec = Callable[[argparse.Namespace, Settings], LagMonitor]

_SECRET_KEY = re.compile(r"password|secret|token|private|key\.pem|oauthbearer\.config|jaas", re.I)


def register(subparsers: Subparsers) -> None:
    """Add ``config``."""
    parser = subparsers.add_parser(
        "config",
        help="print the effective settings (secrets redacted)",
        description="Print the settings a sagaline process would use here: SAGALINE_* "
        "variables, KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL, the dev file, and the librdkafka "
        "settings passed through. Passwords and other secrets are shown redacted.",
    )
    _kafka_options(parser)
    add_json_flag(parser)
    set_handler(parser, _show)


def _kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kafka-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka setting for every Kafka client (repeatable; wins over sagaline's)",
    )
    parser.add_argument(
        "--kafka-config-file", type=Path, metavar="FILE", help="librdkafka KEY=VALUE lines"
    )


def add_process_options(parser: argparse.ArgumentParser) -> None:
    """``--metrics-port``, ``--kafka-config`` and ``--kafka-config-file``."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on this port (0 = off; default SAGALINE_METRICS_PORT or 0)",
    )
    _kafka_options(parser)


def kafka_passthrough(env: EnvSettings, args: argparse.Namespace) -> dict[str, KafkaValue]:
    """The librdkafka settings passed through: environment, then the command line."""
    values: dict[str, KafkaValue] = env.librdkafka_config()
    file: Path | None = getattr(args, "kafka_config_file", None)
    if file is not None:
        values.update(read_kafka_config_file(file))
    for pair in getattr(args, "kafka_config", None) or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--kafka-config {pair!r} is not KEY=VALUE")
        values[key.strip()] = value.strip()
    return values


def redact_kafka(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with the values of secret keys (passwords, tokens, keys) redacted."""
    return {
        k: REDACTED if _SECRET_KEY.search(k) or is_secret_name(k) else v for k, v in config.items()
    }


#: the processes that sign as their role (with signing on, their key must be here)
_SIGNING_ROLES = ("orchestrator", "worker", "relay")


def with_process_services(service: str, handler: Handler, lag: LagSpec | None = None) -> Handler:
    """``handler`` preceded by the shared process set-up (see the module)."""

    def run(args: argparse.Namespace) -> int:
        env = EnvSettings.load()
        if env.signing and service in _SIGNING_ROLES:
            from sagaline.orchestrator.runtime.signing_runtime import signer_for

            signer_for(service)  # no key: one line now, not once Kafka answers
        set_passthrough(kafka_passthrough(env, args))
        configure_tracing(f"sagaline-{service}")
        port = args.metrics_port if args.metrics_port is not None else env.metrics_port
        if port < 0 or port > 65535:
            raise ConfigError(f"--metrics-port {port} is not a port (0-65535; 0 = off)")
        try:
            serving = serve_metrics(port)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on port {port}: {exc.strerror}") from None
        if serving and lag is not None:
            settings = Settings.from_env(
                kafka_bootstrap_servers=getattr(args, "bootstrap", None),
                topic_prefix=getattr(args, "prefix", None),
            )
            lag(args, settings).start()
        return handler(args)

    return run


def _variable(field: str) -> str:
    """The environment variable of an :class:`EnvSettings` field."""
    return _VARIABLES.get(field, "SAGALINE_" + field.upper())


_VARIABLES = {
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "database_url": "DATABASE_URL",
    "otel_exporter_otlp_endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "otel_service_name": "OTEL_SERVICE_NAME",
}


def _effective(args: argparse.Namespace) -> dict[str, Any]:
    env = EnvSettings.load()
    shown: dict[str, Any] = {}
    for name, value in env.model_dump().items():
        if value is None or value == {}:
            continue
        if name == "database_url":
            value = redact_url(str(value))
        elif name == "kafka_password":
            value = REDACTED
        elif name == "kafka_config":
            value = redact_kafka(value)
        elif name == "signing_key":
            value = "(set; its path is not shown)"
        shown[_variable(name)] = str(value) if isinstance(value, Path) else value
    # signing: whether it is on and the keyring it verifies with (never a private key)
    shown.setdefault("SAGALINE_KEYS_DIR", str(dev_env_path().parent / "keys"))
    shown["kafka_passthrough"] = redact_kafka(kafka_passthrough(env, args))
    return shown


def _show(args: argparse.Namespace) -> int:
    shown = _effective(args)
    lines = []
    for name, value in shown.items():
        if isinstance(value, dict):
            lines.append(f"{name}:" + ("" if value else " (none)"))
            lines.extend(f"  {k} = {v}" for k, v in sorted(value.items()))
        else:
            lines.append(f"{name} = {value}")
    emit(args, shown, "\n".join(lines))
    return 0
