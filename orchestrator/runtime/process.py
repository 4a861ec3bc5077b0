"""Run one orchestrator process: ``sagaline orchestrator run --app ...``.

SIGTERM / SIGINT finish the current batch, leave the consumer group and exit
0.  A fatal Kafka error exits 3 so a supervisor restarts the process (the
restarted instance, with the same ``--instance-id``, fences its zombie).
Configuration errors exit 2, among them a topic layout that is refused at start
or changes while running (partition counts, ADR 0009).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import KafkaException

from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.core.errors import SagalineError
from sagaline.orchestrator.runtime import data_keys
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.errors import FatalKafkaError, RestoreError, TopicConfigError
from sagaline.orchestrator.runtime.loader import load_object as load
from sagaline.orchestrator.runtime.local_runs import LocalSteps
from sagaline.orchestrator.runtime.metrics import APPROVALS_OPEN
from sagaline.orchestrator.runtime.ports import Codec, SagaLogic
from sagaline.orchestrator.runtime.schedules import (
    declare_schedules,
    logic_with_schedules,
    split_app,
)
from sagaline.orchestrator.runtime.snapshots import LazySnapshot
from sagaline.orchestrator.runtime.startup_clock import log_startup
from sagaline.orchestrator.runtime.step_topics import check_step_topics
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.base import Record

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FATAL",
    "add_run_arguments",
    "load_object",
    "run_from_args",
    "run_orchestrator",
]

EXIT_CONFIG = 2
EXIT_FATAL = 3

log = logging.getLogger("sagaline.orchestrator")

#: builds the runner of local steps from (logic, settings, codec); ``None``: no local steps
LocalStepsFactory = Callable[[SagaLogic, Settings, Any], LocalSteps | None]


def load_object(spec: str, option: str = "--app") -> object:
    """Import ``module:attribute`` (a zero-argument callable is called)."""
    return load(spec, option=option, error=SagalineError, call_unless="decide")


def _as_logic(obj: object) -> SagaLogic:
    if hasattr(obj, "decide") and hasattr(obj, "timers") and hasattr(obj, "state_type"):
        return obj  # type: ignore[return-value]
    from sagaline.orchestrator.runtime.core import CoreLogic

    return CoreLogic.from_object(obj)


def _default_codec() -> Codec:
    from sagaline.orchestrator.runtime.core import AvroCodec

    return AvroCodec()


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``orchestrator run`` (shared with the ``sagaline`` CLI)."""
    parser.add_argument(
        "--app",
        required=True,
        help="module:attribute of a SagaRegistry, a list of Saga classes, or a SagaLogic",
    )
    parser.add_argument("--codec", help="module:attribute of a Codec (default: the Avro codec)")
    parser.add_argument("--instance-id", required=True, help="stable id (transactional.id)")
    parser.add_argument("--group", default="sagaline-orchestrator")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: env)")
    parser.add_argument("--prefix", help="topic prefix (default: env or 'sagaline')")
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument("--linger-ms", type=float, default=0.0)
    parser.add_argument("--tombstone-grace-s", type=float, default=86_400.0)
    parser.add_argument("--transaction-timeout-ms", type=int, default=30_000)
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument(
        "--fetch-wait-max-ms", type=int, default=100, help="broker-side wait of an empty fetch"
    )
    parser.add_argument("--producer-linger-ms", type=float, default=0.5)
    parser.add_argument(
        "--dynamic-membership",
        action="store_true",
        help="do not set group.instance.id (a restart then waits for the session timeout)",
    )
    parser.add_argument(
        "--ensure-topics",
        type=int,
        metavar="PARTITIONS",
        help="create missing topics with this many partitions before starting",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--stats-file", help="write the engine's counters here (JSON) at exit")


def run_orchestrator(orchestrator: Orchestrator, stats_file: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code."""

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping after the current batch", signum)
        orchestrator.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        orchestrator.start()
        log_startup("orchestrator", "producer fenced, group joined")
        orchestrator.run()
    except TopicConfigError as exc:
        # a topic layout the orchestrator refuses (partition counts changed, ...)
        log.error("%s", exc)
        return EXIT_CONFIG
    except (FatalKafkaError, RestoreError) as exc:
        log.error("fatal: %s", exc)
        return EXIT_FATAL
    finally:
        if stats_file:
            Path(stats_file).write_text(json.dumps(asdict(orchestrator.stats)), encoding="utf-8")
    return 0


def _ensure_topics_waiting(settings: Settings, layout: TopicLayout, *, create: bool) -> None:
    """``ensure_topics``, waiting with backoff (and saying so) while Kafka is unreachable."""
    delay = 0.5
    while True:
        try:
            ensure_topics(settings.kafka_bootstrap_servers, settings.topics, layout, create=create)
            return
        except KafkaException as exc:
            where = settings.kafka_bootstrap_servers
            log.warning("waiting for Kafka at %s (%s); retrying in %.1fs", where, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _active_states(orchestrator: Orchestrator) -> list[Record | LazySnapshot]:
    """The active sagas' states, some unread (for the open-approvals gauge, read at scrape
    time: ``snapshots.approvals_by_type``)."""
    owned = list(orchestrator._owned.values())
    return [state for part in owned for state in list(part.active.values())]


def _engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        instance_id=args.instance_id,
        group_id=args.group,
        max_batch=args.max_batch,
        linger_ms=args.linger_ms,
        tombstone_grace_s=args.tombstone_grace_s,
        transaction_timeout_ms=args.transaction_timeout_ms,
        session_timeout_ms=args.session_timeout_ms,
        fetch_wait_max_ms=args.fetch_wait_max_ms,
        producer_linger_ms=args.producer_linger_ms,
        static_membership=not args.dynamic_membership,
    )


def run_from_args(args: argparse.Namespace, local: LocalStepsFactory | None = None) -> int:
    """Build the orchestrator that ``args`` describe and run it until stopped.

    ``local(logic, settings, codec)`` gives the runner of the sagas' local steps (or ``None``);
    the command line passes ``sagaline.consumers.local_steps.local_steps_for``.
    """
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    log_startup("orchestrator", "imports done")
    try:
        settings = Settings.from_env(
            kafka_bootstrap_servers=args.bootstrap, topic_prefix=args.prefix
        )
        data_keys.configure(settings)  # personal fields: this deployment's data keys
        app, schedules = split_app(load_object(args.app))
        base = _as_logic(app)
        logic = logic_with_schedules(base, schedules)
        codec = load_object(args.codec, "--codec") if args.codec else _default_codec()
        local_steps = local(base, settings, codec) if local is not None else None
        layout = TopicLayout(partitions=args.ensure_topics or 1)
        _ensure_topics_waiting(settings, layout, create=args.ensure_topics is not None)
        log_startup("orchestrator", "app loaded, Kafka answered")
        check_step_topics(settings.kafka_bootstrap_servers, base)
        declare_schedules(settings, schedules, codec)  # type: ignore[arg-type]
        config = _engine_config(args)
        orchestrator = Orchestrator(
            settings,
            logic,
            config,
            codec=codec,  # type: ignore[arg-type]
            local_steps=local_steps,
        )
        APPROVALS_OPEN.track(lambda: _active_states(orchestrator))
    except SagalineError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    return run_orchestrator(orchestrator, args.stats_file)
