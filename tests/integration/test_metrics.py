"""Every long-running process serves Prometheus metrics, and they agree with the journal.

Real ``sagaline`` processes (orchestrator, worker, relay, projection, console)
on real Kafka and PostgreSQL run the demo's refund sagas; the test scrapes
each process's ``/metrics`` while they run and compares the counters with the
journal, the outbox table and the dead-letter topic.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import psycopg
import pytest
from observe_stack import Stack, by_label, run_refunds, running_stack, scrape, total, wait_until

from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.runtime.journal_reader import read_journal
from sagaline.orchestrator.runtime.kafka_config import client_producer_config
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.schemas.events import SagaFinished, SagaStarted, StepCompensated, StepCompleted
from sagaline.schemas.state import SagaState

pytestmark = pytest.mark.integration

REFUND = "refund_demo"


def _approvals_agree(stack: Stack, states: dict[str, SagaState]) -> None:
    """The open-approvals gauge counts exactly the approval waits on the state topic."""
    waiting = sum(
        1 for s in states.values() for w in s.waits if w.kind in ("approval", "tool_approval")
    )
    assert waiting >= 1
    port = stack.ports["orchestrator"]
    wait_until(
        lambda: total(scrape(port), "sagaline_approvals_open", saga_type=REFUND) == waiting,
        20,
        f"sagaline_approvals_open == {waiting}",
    )


def _poison_command(stack: Stack) -> None:
    # signed as a client: it reaches the decoder and is dead-lettered for what it is
    producer = SignedProducer(
        client_producer_config(stack.settings.kafka_bootstrap_servers), "client"
    )
    producer.produce(stack.names.commands, key=b"poison-1", value=b"\x00 not a record")
    assert producer.flush(10) == 0


def _journal_counts(stack: Stack) -> tuple[Counter[str], Counter[str], Counter[str], Counter[str]]:
    read = read_journal(stack.settings.kafka_bootstrap_servers, stack.names.journal, timeout=60)
    started: Counter[str] = Counter()
    ended: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    compensations: Counter[str] = Counter()
    for record in read.records:
        for event in record.entry.events:
            if isinstance(event, SagaStarted):
                started[event.saga_type] += 1
            elif isinstance(event, SagaFinished):
                ended[event.status] += 1
            elif isinstance(event, StepCompleted):
                steps[event.step] += 1
            elif isinstance(event, StepCompensated):
                compensations[event.step] += 1
    return started, ended, steps, compensations


def _check_orchestrator(stack: Stack) -> None:
    started, ended, _, _ = _journal_counts(stack)
    orch = scrape(stack.ports["orchestrator"])
    assert started == {REFUND: 4}
    assert total(orch, "sagaline_sagas_started_total", saga_type=REFUND) == started[REFUND]
    assert by_label(orch, "sagaline_sagas_ended_total", "status") == {
        status: float(n) for status, n in ended.items()
    }
    assert sum(ended.values()) == 4
    batches = total(orch, "sagaline_decision_batch_size_count")
    assert batches >= 1
    assert total(orch, "sagaline_decision_batch_size_sum") >= 4 + 4  # starts and replies at least
    assert total(orch, "sagaline_transaction_commit_seconds_count") >= batches
    assert total(orch, "sagaline_restore_duration_seconds_count") >= 1
    assert total(orch, "sagaline_dead_letters_total", component="orchestrator") == 1


def _check_worker(stack: Stack) -> None:
    _, _, steps, compensations = _journal_counts(stack)
    worker = scrape(stack.ports["worker"])
    done = {
        step: total(
            worker,
            "sagaline_step_duration_seconds_count",
            step=step,
            kind="step",
            outcome="succeeded",
        )
        for step in steps
    }
    assert steps and done == {step: float(n) for step, n in steps.items()}
    undone = {
        step: total(
            worker,
            "sagaline_step_duration_seconds_count",
            step=step,
            kind="compensate",
            outcome="succeeded",
        )
        for step in compensations
    }
    assert undone == {step: float(n) for step, n in compensations.items()}
    attempts = total(worker, "sagaline_step_attempts_count")
    assert attempts == total(worker, "sagaline_step_duration_seconds_count")


def _check_relay(stack: Stack) -> None:
    with psycopg.connect(stack.settings.database_url or "", autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {stack.worker_schema}.outbox WHERE sent_at IS NOT NULL"
        ).fetchone()
    assert row is not None and row[0] >= 1
    port = stack.ports["relay"]
    wait_until(
        lambda: (
            total(scrape(port), "sagaline_relay_delay_seconds_count") == row[0]
            and total(scrape(port), "sagaline_outbox_backlog_rows") == 0
        ),
        20,
        f"the relay reporting {row[0]} rows published and none left",
    )


def _check_lag(stack: Stack) -> None:
    names = stack.names
    expected = {
        "orchestrator": {names.commands, names.replies},
        "worker": {names.tasks},
        "projection": {names.journal},
    }
    for process, topics in expected.items():
        port = stack.ports[process]

        def caught_up(port: int = port, topics: set[str] = topics) -> bool:
            lag = scrape(port)
            seen = {dict(ls)["topic"] for (n, ls) in lag if n == "sagaline_consumer_lag_records"}
            return seen == topics and total(lag, "sagaline_consumer_lag_records") == 0

        wait_until(caught_up, 30, f"{process} reporting zero lag on {sorted(topics)}")


def test_every_process_serves_metrics_that_agree_with_the_journal(
    kafka_bootstrap: str, database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    with running_stack(kafka_bootstrap, database_url, f"{topic_prefix}-m", tmp_path) as stack:
        try:
            stack.wait_for_metrics()
            with SagaClient(stack.settings) as client:
                run_refunds(
                    stack, client, 4, while_waiting=lambda states: _approvals_agree(stack, states)
                )
            _poison_command(stack)
            port = stack.ports["orchestrator"]
            wait_until(
                lambda: total(scrape(port), "sagaline_dead_letters_total") == 1,
                30,
                "the poison command dead-lettered",
            )
            assert total(scrape(port), "sagaline_approvals_open") == 0
            _check_orchestrator(stack)
            _check_worker(stack)
            _check_relay(stack)
            _check_lag(stack)
            console = scrape(stack.ports["console"])
            assert total(console, "process_cpu_seconds_total") > 0
        except BaseException:
            print(stack.logs())
            raise
