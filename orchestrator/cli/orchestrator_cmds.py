"""``sagaline topics ensure``, ``sagaline orchestrator run`` and the client commands.

``sagaline bench orchestrator`` runs ``sagaline.orchestrator.bench`` (JSON).

Client commands (each writes one Avro command to the commands topic, or
reads the state topic): ``start``, ``signal``, ``approve``, ``reject``,
``cancel``, ``pause``, ``resume``, ``retry-step``, ``skip-step``, ``status``
and ``wait``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sagaline.orchestrator.cli.command import Subparsers, add_json_flag, emit, set_handler
from sagaline.orchestrator.client import SagaClient, SagaNotFound
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.core.errors import ConfigError
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.runtime.core import CoreLogic
from sagaline.orchestrator.runtime.process import add_run_arguments, load_object, run_from_args
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.state import SagaState

__all__ = ["register"]


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: env / dev file)")
    parser.add_argument("--prefix", help="topic prefix (default: env or 'sagaline')")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(kafka_bootstrap_servers=args.bootstrap, topic_prefix=args.prefix)


def register(subparsers: Subparsers) -> None:
    """Add ``topics``, ``orchestrator`` and the saga client commands."""
    topics = subparsers.add_parser("topics", help="create or verify sagaline's topics")
    topic_cmds = topics.add_subparsers(dest="topics_command", metavar="<command>", required=True)
    ensure = topic_cmds.add_parser("ensure", help="create missing topics, verify all")
    ensure.add_argument("--partitions", type=int, default=6)
    ensure.add_argument("--replication", type=int, default=1)
    ensure.add_argument("--check", action="store_true", help="verify only, create nothing")
    _connection_args(ensure)
    add_json_flag(ensure)
    set_handler(ensure, _topics_ensure)

    orch = subparsers.add_parser("orchestrator", help="run the saga orchestrator")
    orch_cmds = orch.add_subparsers(dest="orchestrator_command", metavar="<command>", required=True)
    run = orch_cmds.add_parser("run", help="run one orchestrator process until SIGTERM")
    add_run_arguments(run)
    set_handler(run, run_from_args)

    start = subparsers.add_parser("start", help="start a saga (idempotent by --id)")
    start.add_argument("--app", required=True, help="module:attribute of a SagaRegistry")
    start.add_argument("--type", required=True, dest="saga_type", help="saga type name")
    start.add_argument("--version", type=int, help="definition version (default: latest)")
    start.add_argument("--data", required=True, help="the saga data as JSON")
    start.add_argument("--id", dest="saga_id", help="saga id (default: a new UUID)")
    start.add_argument("--by", help="who requests it")
    _connection_args(start)
    add_json_flag(start)
    set_handler(start, _start)

    signal = subparsers.add_parser("signal", help="deliver a signal to a waiting saga")
    signal.add_argument("saga_id")
    signal.add_argument("name", help="the wait's name")
    signal.add_argument("--by", required=True)
    signal.add_argument("--note")
    _connection_args(signal)
    set_handler(signal, _signal)

    for verb, approved in (("approve", True), ("reject", False)):
        p = subparsers.add_parser(verb, help=f"{verb} a saga's open approval")
        p.add_argument("saga_id")
        p.add_argument("wait", help="the approval's name")
        p.add_argument("--by", required=True, help="the approver's identity")
        p.add_argument("--note")
        p.set_defaults(approved=approved)
        _connection_args(p)
        set_handler(p, _approval)

    for verb in ("cancel", "pause", "resume"):
        p = subparsers.add_parser(verb, help=f"{verb} a saga")
        p.add_argument("saga_id")
        p.add_argument("--by", required=True)
        p.add_argument("--reason")
        p.set_defaults(verb=verb)
        _connection_args(p)
        set_handler(p, _operator)

    for verb in ("retry-step", "skip-step"):
        p = subparsers.add_parser(verb, help=f"operator: {verb.replace('-', ' ')}")
        p.add_argument("saga_id")
        p.add_argument("step")
        p.add_argument("--by", required=True)
        p.add_argument("--reason")
        p.set_defaults(verb=verb)
        _connection_args(p)
        set_handler(p, _step_operator)

    status = subparsers.add_parser("status", help="print a saga's latest snapshot")
    status.add_argument("saga_id")
    _connection_args(status)
    add_json_flag(status)
    set_handler(status, _status)

    bench = subparsers.add_parser("bench", help="benchmarks (JSON on stdout)")
    bench_cmds = bench.add_subparsers(dest="bench_command", metavar="<part>", required=True)
    orch_bench = bench_cmds.add_parser(
        "orchestrator", help="saga latency, throughput and recovery of the orchestrator"
    )
    orch_bench.add_argument("--bootstrap", help="Kafka bootstrap servers (default: env)")
    orch_bench.add_argument("--partitions", type=int, default=4)
    orch_bench.add_argument("--sequential", type=int, default=100)
    orch_bench.add_argument("--throughput", type=int, default=1000)
    orch_bench.add_argument("--recovery", type=int, default=1000)
    orch_bench.add_argument("--sleep-ms", type=float, default=5.0)
    set_handler(orch_bench, _bench_orchestrator)

    wait = subparsers.add_parser("wait", help="wait until a saga is terminal")
    wait.add_argument("saga_id")
    wait.add_argument("--timeout", type=float, default=60.0)
    _connection_args(wait)
    add_json_flag(wait)
    set_handler(wait, _wait)


def _bench_orchestrator(args: argparse.Namespace) -> int:
    from sagaline.orchestrator.bench.run import BenchOptions, run_bench

    settings = Settings.from_env(kafka_bootstrap_servers=args.bootstrap)
    options = BenchOptions(
        bootstrap=settings.kafka_bootstrap_servers,
        partitions=args.partitions,
        sequential=args.sequential,
        throughput=args.throughput,
        recovery=args.recovery,
        sleep_ms=args.sleep_ms,
    )
    print(json.dumps(run_bench(options), indent=2))
    return 0


def _topics_ensure(args: argparse.Namespace) -> int:
    settings = _settings(args)
    specs = ensure_topics(
        settings.kafka_bootstrap_servers,
        settings.topics,
        TopicLayout(partitions=args.partitions, replication=args.replication),
        create=not args.check,
    )
    data = {s.name: {"partitions": s.partitions, "config": dict(s.config)} for s in specs}
    emit(args, {"topics": data}, "\n".join(f"ok  {s.name}" for s in specs))
    return 0


def _summary(state: SagaState) -> dict[str, Any]:
    return {
        "saga_id": state.saga_id,
        "saga_type": state.saga_type,
        "saga_version": state.saga_version,
        "status": state.status,
        "node": state.node,
        "waits": [w.name for w in state.waits],
        "steps": {name: st.status for name, st in state.steps.items()},
        "started_at": state.started_at.isoformat(),
        "finished_at": state.finished_at.isoformat() if state.finished_at else None,
        "outcome_reason": state.outcome_reason,
    }


def _text(state: SagaState) -> str:
    steps = ", ".join(f"{n}={s.status}" for n, s in state.steps.items()) or "-"
    return f"{state.saga_id} [{state.saga_type} v{state.saga_version}] {state.status}  {steps}"


def _start(args: argparse.Namespace) -> int:
    obj = load_object(args.app)
    registry = obj if isinstance(obj, SagaRegistry) else CoreLogic.from_object(obj).registry
    definition = registry.get(args.saga_type, args.version)
    data = definition.data_type.model_validate_json(args.data)
    with SagaClient(_settings(args)) as client:
        handle = client.start(definition, data, saga_id=args.saga_id, requested_by=args.by)
    emit(args, {"saga_id": handle.saga_id}, handle.saga_id)
    return 0


def _signal(args: argparse.Namespace) -> int:
    with SagaClient(_settings(args)) as client:
        client.signal(args.saga_id, args.name, by=args.by, note=args.note)
    return 0


def _approval(args: argparse.Namespace) -> int:
    with SagaClient(_settings(args)) as client:
        if args.approved:
            client.approve(args.saga_id, args.wait, by=args.by, note=args.note)
        else:
            client.reject(args.saga_id, args.wait, by=args.by, note=args.note)
    return 0


def _operator(args: argparse.Namespace) -> int:
    with SagaClient(_settings(args)) as client:
        action = {"cancel": client.cancel, "pause": client.pause, "resume": client.resume}
        action[args.verb](args.saga_id, by=args.by, reason=args.reason)
    return 0


def _step_operator(args: argparse.Namespace) -> int:
    with SagaClient(_settings(args)) as client:
        if args.verb == "retry-step":
            client.retry_step(args.saga_id, args.step, by=args.by, reason=args.reason)
        else:
            client.skip_step(args.saga_id, args.step, by=args.by, reason=args.reason)
    return 0


def _status(args: argparse.Namespace) -> int:
    with SagaClient(_settings(args)) as client:
        state = client.status(args.saga_id)
    if state is None:
        raise SagaNotFound(f"no snapshot of saga {args.saga_id!r} on the state topic")
    emit(args, _summary(state), _text(state))
    return 0


def _wait(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise ConfigError("--timeout must be positive")
    with SagaClient(_settings(args)) as client:
        state = client.wait(args.saga_id, timeout=args.timeout)
    emit(args, _summary(state), _text(state))
    return 0 if state.status == "completed" else 1
