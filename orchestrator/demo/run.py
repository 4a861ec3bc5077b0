"""``sagaline demo``: the reference sagas on real Kafka and PostgreSQL, with crashes.

:func:`run_demo`:

1. ensures the topics (a fresh prefix per run), the worker tables and the
   business tables, and seeds the orders the refunds need;
2. starts the orchestrator, the workers and the outbox relay as separate OS
   processes (the ``sagaline`` commands);
3. starts a batch of every reference saga;
4. SIGKILLs a worker and the orchestrator mid-flight and starts them again;
5. plays the people: approves some refunds and rejects others (with the
   approver's identity), never answers one (its approval times out),
   resumes the research saga that paused on its token budget;
6. waits until every saga is terminal, stops the processes, and checks the
   outcomes, the read model, the business tables (side effects exactly
   once, LLM calls not repeated), the journal audit (``sagaline.orchestrator.audit``)
   and a strict replay (every recorded input re-decided by the current code).

The result (:class:`DemoResult`) says whether every check held.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from sagaline.consumers.migrations import migrate
from sagaline.orchestrator.audit import audit
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.demo.checks import (
    Check,
    SagaOutcome,
    check_effects,
    check_outcomes,
    check_read_model,
    outcome_of,
    read_model_statuses,
)
from sagaline.orchestrator.demo.console import demo_console
from sagaline.orchestrator.demo.plan import DemoPlan, plan, seed
from sagaline.orchestrator.demo.procs import Cluster, ProcessSpec, sagaline_command
from sagaline.orchestrator.demo.report import outcome_table, render_checks
from sagaline.orchestrator.demo.schedule_check import check_schedule, schedule_event
from sagaline.orchestrator.demo.watch import StateWatcher
from sagaline.orchestrator.replay import definition_lookup, replay
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.sagas import REGISTRY
from sagaline.sagas.tables import APP_SCHEMA_ENV, Tables, app_schema, ensure_tables
from sagaline.schemas.state import SagaState

__all__ = ["DemoOptions", "DemoResult", "run_demo"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    """Sizes and knobs of a demo run."""

    refunds: int = 10
    research: int = 3
    enrichments: int = 3
    workers: int = 2
    partitions: int = 3
    chaos: bool = True
    timeout_s: float = 180.0
    #: PostgreSQL schema of the worker tables (inbox, outbox).
    worker_schema: str = "sagaline"
    #: PostgreSQL schema of the business tables (orders, payments, ...).
    app_schema: str = "sagaline_demo"
    #: Topic prefix; default ``sagaline-demo-<run id>`` (fresh topics per run).
    prefix: str | None = None
    log_dir: Path = Path(".sagaline/demo")
    #: Serve the web console (``sagaline ui``) beside the demo's processes.
    console: bool = True
    #: Where the console's users file and the demo user's password live.
    state_dir: Path = Path(".sagaline")


@dataclass
class DemoResult:
    """Everything the demo observed, and its verdict."""

    run_id: str
    prefix: str
    app_schema: str
    worker_schema: str
    outcomes: list[SagaOutcome] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    audit: dict[str, Any] = field(default_factory=dict)
    audit_text: str = ""
    events: list[str] = field(default_factory=list)
    process_starts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    log_dir: str = ""
    console_url: str = ""
    console_again: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "run_id": self.run_id,
            "topic_prefix": self.prefix,
            "app_schema": self.app_schema,
            "worker_schema": self.worker_schema,
            "seconds": round(self.seconds, 1),
            "sagas": [o.as_dict() for o in self.outcomes],
            "summary": self.summary(),
            "checks": [c.as_dict() for c in self.checks],
            "audit": self.audit,
            "events": self.events,
            "process_starts": self.process_starts,
            "log_dir": self.log_dir,
            "console_url": self.console_url,
        }

    def summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for o in self.outcomes:
            kind = out.setdefault(o.kind, {})
            kind[o.status] = kind.get(o.status, 0) + 1
        return out

    def render(self, sagaline: str = "sagaline") -> str:
        """The report; ``sagaline`` is how the user types the command here."""
        lines = [f"sagaline demo {self.run_id} (topics {self.prefix}.*) in {self.seconds:.0f}s", ""]
        lines.append(outcome_table(self.outcomes))
        lines.append("")
        lines.append("what the demo did: " + "; ".join(self.events))
        lines.append("")
        lines.append("checks:")
        lines.extend(render_checks(self.checks))
        if self.audit_text:
            lines.append("")
            lines.append(self.audit_text)
        lines.append("")
        lines.append("look closer:")
        lines.append(
            f"  {sagaline} replay --prefix {self.prefix} --app sagaline.sagas:REGISTRY --strict"
        )
        lines.append(f"  {sagaline} list --db-schema {self.worker_schema} --type refund_demo")
        if self.console_again:
            lines.append(f"  the web console on these sagas: {self.console_again}")
        lines.append(f"  process logs: {self.log_dir}")
        lines.append("")
        lines.append(
            "demo passed: every saga ended as planned, side effects ran once, no LLM call repeated"
            if self.ok
            else f"demo FAILED (process logs in {self.log_dir})"
        )
        return "\n".join(lines)


def _orchestrator_argv(instance_id: str, group: str, prefix: str) -> list[str]:
    args = ["--app", "sagaline.sagas:DEMO_APP", "--instance-id", instance_id, "--group", group]
    args += ["--prefix", prefix, "--session-timeout-ms", "6000"]
    return sagaline_command("orchestrator", "run", *args)


def _process_specs(run_id: str, prefix: str, options: DemoOptions) -> list[ProcessSpec]:
    common = ["--prefix", prefix, "--schema", options.worker_schema]
    specs = [
        ProcessSpec(
            "orchestrator", _orchestrator_argv(f"{prefix}-orch-1", f"{prefix}-orchestrator", prefix)
        )
    ]
    for i in range(1, options.workers + 1):
        specs.append(
            ProcessSpec(
                f"worker-{i}",
                sagaline_command(
                    "worker",
                    "run",
                    "--app",
                    "sagaline.sagas:REGISTRY",
                    "--group",
                    f"{prefix}-workers",
                    "--concurrency",
                    "4",
                    *common,
                ),
            )
        )
    specs.append(
        ProcessSpec("relay", sagaline_command("relay", "run", "--poll-interval", "0.5", *common))
    )
    specs.append(
        ProcessSpec(
            "projection",
            sagaline_command(
                "projection",
                "run",
                "--name",
                f"{prefix}-projection",
                "--prefix",
                prefix,
                "--db-schema",
                options.worker_schema,
            ),
        )
    )
    return specs


class _People:
    """Plays the managers and the research lead: answers each wait once."""

    def __init__(self, client: SagaClient, demo: DemoPlan, events: list[str]) -> None:
        self.client = client
        self.pending = {
            p.saga_id: p for p in demo.sagas if p.action in ("approve", "reject", "resume")
        }
        self.events = events

    def act(self, states: dict[str, SagaState]) -> None:
        for saga_id, p in list(self.pending.items()):
            state = states.get(saga_id)
            if state is None:
                continue
            wait = next((w for w in state.waits if w.name == "manager_approval"), None)
            if p.action in ("approve", "reject") and wait is not None:
                assert p.by is not None
                if p.action == "approve":  # on the view the manager was shown (bound)
                    self.client.approve(
                        saga_id,
                        "manager_approval",
                        by=p.by,
                        note="within policy",
                        seen_sha256=wait.shown_sha256,
                    )
                else:
                    self.client.reject(saga_id, "manager_approval", by=p.by, note="not covered")
                del self.pending[saga_id]
            elif p.action == "resume" and state.status == "paused":
                assert p.by is not None
                self.client.resume(saga_id, by=p.by, reason="worth the extra tokens")
                self.events.append(f"{p.by} resumed {saga_id} after its token budget paused it")
                del self.pending[saga_id]


def _prepare(settings: Settings, options: DemoOptions, names: TopicNames, demo: DemoPlan) -> Tables:
    assert settings.database_url is not None
    ensure_topics(
        settings.kafka_bootstrap_servers,
        names,
        TopicLayout(partitions=options.partitions),
        create=True,
    )
    migrate(settings.database_url, options.worker_schema)
    tables = Tables(app_schema(options.app_schema))
    with psycopg.connect(settings.database_url) as conn:
        ensure_tables(conn, tables.schema)
        seed(conn, tables, demo)
    return tables


def _wait_read_model(
    database_url: str, schema: str, watcher: StateWatcher, ids: list[str], timeout: float = 30.0
) -> dict[str, str]:
    """The projection's statuses once they match the state topic (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            rows = read_model_statuses(conn, schema, ids)
            final = {i: s.status for i in ids if (s := watcher.get(i)) is not None}
            if rows == final or time.monotonic() > deadline:
                return rows
            time.sleep(0.5)


def _mid_flight(states: dict[str, SagaState], demo: DemoPlan) -> bool:
    """Some refunds wait for a manager and some agents are still thinking."""
    waiting = sum(1 for p in demo.of_kind("refund") if (s := states.get(p.saga_id)) and s.waits)
    busy = [
        p
        for p in demo.sagas
        if p.kind != "refund" and (s := states.get(p.saga_id)) and not s.is_terminal
    ]
    return waiting >= 1 and (bool(busy) or not demo.of_kind("research"))


def _start_sagas(client: SagaClient, demo: DemoPlan, run_id: str, result: DemoResult) -> None:
    for p in demo.sagas:
        client.start(
            p.definition,
            p.data,
            saga_id=p.saga_id,
            check_existing=False,
            flush=False,
            requested_by=f"demo-{run_id}",
        )
    client.close()
    counts = {k: len(demo.of_kind(k)) for k in ("refund", "research", "enrichment")}
    result.events.append(
        f"started {counts['refund']} refunds, {counts['research']} research agents,"
        f" {counts['enrichment']} enrichments"
    )


def _kill_mid_flight(
    cluster: Cluster,
    watcher: StateWatcher,
    demo: DemoPlan,
    tick: Callable[[], None],
    options: DemoOptions,
    result: DemoResult,
    progress: Progress,
) -> None:
    """SIGKILL a worker and the orchestrator while sagas wait and agents think; restart both."""
    ids = [p.saga_id for p in demo.sagas]
    watcher.wait_until(
        ids[:1],
        lambda s: _mid_flight(watcher.states, demo),
        timeout=options.timeout_s,
        what="mid-flight",
        tick=tick,
    )
    in_flight = sum(1 for i in ids if (s := watcher.get(i)) is None or not s.is_terminal)
    killed_worker = cluster.kill("worker-1")
    killed_orch = cluster.kill("orchestrator")
    result.events.append(
        f"SIGKILLed worker-1 (pid {killed_worker}) and the orchestrator"
        f" (pid {killed_orch}) with {in_flight} sagas in flight"
    )
    progress(result.events[-1])
    time.sleep(1.0)
    cluster.restart("orchestrator")
    cluster.restart("worker-1")
    result.events.append("restarted both")
    progress("restarted the orchestrator and worker-1")


def _decisions_event(demo: DemoPlan) -> str:
    decided = [p for p in demo.of_kind("refund") if p.action in ("approve", "reject")]
    return (
        f"{sum(1 for p in decided if p.action == 'approve')} refunds approved and "
        f"{sum(1 for p in decided if p.action == 'reject')} rejected by named managers; "
        f"{sum(1 for p in demo.of_kind('refund') if p.action == 'timeout')}"
        " approval left to time out"
    )


def _run_processes(
    settings: Settings,
    options: DemoOptions,
    demo: DemoPlan,
    result: DemoResult,
    env: dict[str, str],
    progress: Progress,
) -> tuple[dict[str, SagaState], dict[str, str]]:
    """Start the processes, the sagas and the people; return final states and read-model rows."""
    names = TopicNames(result.prefix)
    assert settings.database_url is not None
    log_dir = Path(result.log_dir)
    cluster = Cluster(env=env, log_dir=log_dir)
    watcher = StateWatcher(settings.kafka_bootstrap_servers, names.state)
    client = SagaClient(
        Settings(settings.kafka_bootstrap_servers, settings.database_url, names),
        client_id=f"demo-{result.run_id}",
    )
    try:
        for spec in _process_specs(result.run_id, result.prefix, options):
            cluster.start(spec)
        if options.console:
            console = demo_console(options.state_dir, result.prefix, options.worker_schema)
            cluster.start(console.spec)
            result.console_url, result.console_again = console.url, console.again
        progress(f"started {', '.join(cluster.starts())} as separate processes (logs: {log_dir})")
        if options.console:
            console.wait_until_serving(tick=cluster.check_alive)
            result.events.append(f"web console answered at {console.url}")
            progress(console.describe())
        _start_sagas(client, demo, result.run_id, result)
        progress(result.events[-1])
        people = _People(client, demo, result.events)
        ids = [p.saga_id for p in demo.sagas]

        def tick() -> None:
            cluster.check_alive()
            people.act(watcher.states)

        if options.chaos:
            _kill_mid_flight(cluster, watcher, demo, tick, options, result, progress)
        progress("playing the managers: approving, rejecting, and leaving one approval to time out")
        watcher.wait_until(
            ids, lambda s: s.is_terminal, timeout=options.timeout_s, what="terminal", tick=tick
        )
        result.events.append(_decisions_event(demo))
        progress("every saga is terminal; waiting for the read model (sagaline list)")
        read_model = _wait_read_model(settings.database_url, options.worker_schema, watcher, ids)
        progress("stopping the processes")
    finally:
        result.process_starts = cluster.starts()
        cluster.stop_all()
        watcher.poll(0.5)
        states = dict(watcher.states)
        watcher.close()
    return states, read_model


def _audit_and_replay(
    settings: Settings,
    options: DemoOptions,
    names: TopicNames,
    result: DemoResult,
    progress: Progress,
) -> None:
    progress("auditing the journal")
    report = audit(
        settings.kafka_bootstrap_servers,
        names.journal,
        database_url=settings.database_url,
        db_schema=options.worker_schema,
    )
    result.audit = report.to_dict()
    result.audit_text = report.render()
    result.checks.append(
        Check(
            "journal_audit",
            report.ok,
            f"{report.sagas} sagas, {report.entries} journal entries,"
            f" {len(report.findings)} findings",
        )
    )
    progress("re-deciding every journaled input with the current saga code (replay --strict)")
    replayed = replay(
        settings.kafka_bootstrap_servers,
        names.journal,
        strict=True,
        definitions=definition_lookup(REGISTRY),
    )
    result.checks.append(
        Check(
            "replay_strict",
            replayed.ok,
            f"{replayed.checked_inputs} inputs re-decided, {len(replayed.divergences)} divergences"
            + "".join(f"; {d.render()}" for d in replayed.divergences[:3]),
        )
    )


def run_demo(
    settings: Settings, options: DemoOptions, progress: Progress = lambda _m: None
) -> DemoResult:
    """Run the demo against ``settings`` (Kafka, PostgreSQL); return what happened."""
    if settings.database_url is None:
        from sagaline.orchestrator.core.errors import ConfigError

        raise ConfigError("the demo needs PostgreSQL: set DATABASE_URL or run `sagaline dev up`")
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:6]
    prefix = options.prefix or f"sagaline-demo-{run_id}"
    names = TopicNames(prefix)
    demo = plan(
        run_id, refunds=options.refunds, research=options.research, enrichments=options.enrichments
    )
    result = DemoResult(run_id, prefix, options.app_schema, options.worker_schema)
    result.log_dir = str(options.log_dir / run_id)

    progress(f"preparing topics {prefix}.*, worker tables and business tables")
    tables = _prepare(settings, options, names, demo)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
        "SAGALINE_TOPIC_PREFIX": prefix,
        APP_SCHEMA_ENV: tables.schema,
    }
    states, read_model = _run_processes(settings, options, demo, result, env, progress)
    ids = [p.saga_id for p in demo.sagas]
    result.outcomes = [outcome_of(p, states.get(p.saga_id)) for p in demo.sagas]
    result.checks = check_outcomes(demo, states)
    result.checks.append(check_read_model(read_model, states, ids))
    result.checks.append(check_schedule(states))
    result.events.append(schedule_event(states))
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        result.checks += check_effects(conn, tables, demo, states)
    _audit_and_replay(settings, options, names, result, progress)
    result.seconds = time.monotonic() - started
    return result
