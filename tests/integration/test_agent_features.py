"""Issue 15 on real Kafka and PostgreSQL: approvals bound to what was seen, model fallback.

The orchestrator, a real worker (inbox/outbox in PostgreSQL) and the relay
run in threads; the client approves with the SHA-256 it read from the
saga's snapshot.  The journal read back from Kafka carries the decisions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from agent_feature_sagas import (
    REGISTRY,
    BoundRefund,
    Doc,
    ForkPipe,
    Question,
    Refund,
    Research,
)
from orchestrator_process import OrchestratorProcess
from orchestrator_support import (
    check_saga_invariants,
    delete_prefix_topics,
    journals,
    read_committed,
)
from threaded_stack import ThreadedStack

from sagaline.consumers.migrations import migrate
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.client.fork import fork_saga
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.core.audit_rules import audit_entries, audit_saga
from sagaline.orchestrator.core.journal import fold_journal, verify_chain
from sagaline.orchestrator.core.replay_check import check_saga
from sagaline.orchestrator.runtime.core import AvroCodec
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.events import AgentTurnRecorded, ModelFallback, SagaForked, SignalRejected
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import TASK_TYPES, ExecuteStep

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-agentf")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=3))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"t_agentf_{uuid.uuid4().hex[:8]}"
    migrate(database_url, name)
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _until(
    client: SagaClient, saga_id: str, ok: Callable[[SagaState], bool], timeout: float = 60
) -> SagaState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.status(saga_id)
        if state is not None and ok(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"{saga_id} never reached the expected state")


def _view(state: SagaState) -> str | None:
    wait = next((w for w in state.waits if w.name == "manager_ok"), None)
    return wait.shown_sha256 if wait is not None else None


def test_a_bound_approval_is_refused_on_a_stale_view_and_granted_on_the_current_one(
    settings: Settings, database_url: str, schema: str
) -> None:
    with ThreadedStack(settings, REGISTRY, database_url, schema), SagaClient(settings) as client:
        handle = client.start(BoundRefund, Refund(order="o-1"), saga_id="bound-1")
        first = _view(_until(client, "bound-1", lambda s: _view(s) is not None))
        client.reject("bound-1", "manager_ok", by="bob", note="quote again")
        second_state = _until(client, "bound-1", lambda s: _view(s) not in (None, first))
        second = _view(second_state)
        stale = client.approve("bound-1", "manager_ok", by="alice", seen_sha256=first)  # saw 700
        unbound = client.approve("bound-1", "manager_ok", by="alice")  # no hash at all
        for receipt in (stale, unbound):  # each refusal decided before the next approve
            verdict = client.verdict(receipt, 60)
            assert verdict.outcome == "ignored", verdict
            assert "SignalRejected" in verdict.events, verdict
        assert client.status("bound-1").status == "waiting"  # type: ignore[union-attr]
        client.approve("bound-1", "manager_ok", by="alice", seen_sha256=second)
        final = handle.wait(60)
    assert final.status == "completed"
    prefix = settings.topics.prefix
    entries = journals(settings.kafka_bootstrap_servers, prefix, AvroCodec())["bound-1"]
    assert verify_chain(entries) == []  # quote runs twice (a loop): not the one-run invariants
    assert fold_journal(entries) == final
    refusals = [e for x in entries for e in x.events if isinstance(e, SignalRejected)]
    assert ["changed since" in r.reason for r in refusals] == [True, False]
    assert "bound to what the approver saw" in refusals[1].reason
    assert audit_saga(entries) == []


def test_an_llm_turn_falls_back_to_the_next_model_and_the_journal_says_so(
    settings: Settings, database_url: str, schema: str
) -> None:
    with ThreadedStack(settings, REGISTRY, database_url, schema), SagaClient(settings) as client:
        handle = client.start(Research, Question(text="sagas"), saga_id="fallback-1")
        final = handle.wait(90)
    assert final.status == "completed"
    prefix = settings.topics.prefix
    check_saga_invariants(settings.kafka_bootstrap_servers, prefix, AvroCodec(), ["fallback-1"])
    entries = journals(settings.kafka_bootstrap_servers, prefix, AvroCodec())["fallback-1"]
    events = [e for x in entries for e in x.events]
    fallbacks = [e for e in events if isinstance(e, ModelFallback)]
    assert [(f.previous_model, f.model) for f in fallbacks] == [("flaky-model", "steady-model")]
    assert "503 from the flaky provider" in fallbacks[0].reason
    recorded = [e for e in events if isinstance(e, AgentTurnRecorded)]
    assert [(r.model, r.attempt) for r in recorded] == [("steady-model", 2)]
    assert final.usage.llm_calls == 2 and final.usage.cost_micros == 10  # both models count
    assert "answered by steady-model" in final.data.data.decode()  # type: ignore[union-attr]


def test_a_fork_survives_an_orchestrator_sigkill_and_reuses_the_source_results(
    settings: Settings, database_url: str, schema: str, tmp_path: Path
) -> None:
    orch = OrchestratorProcess(settings, "agent_feature_sagas:registry", tmp_path)
    stack = ThreadedStack(settings, REGISTRY, database_url, schema, orchestrator=False)
    orch.start()
    try:
        with stack, SagaClient(settings) as client:
            assert client.start(ForkPipe, Doc(topic="t"), saga_id="src").wait(90).status == (
                "completed"
            )
            fork_saga(client, "src", "draft", new_saga_id="fork-1", requested_by="ops")
            orch.kill()  # while the fork is read, decided or committed
            orch.start()
            fork_saga(client, "src", "draft", new_saga_id="fork-1")  # sent again: one fork
            final = _until(client, "fork-1", lambda s: s.is_terminal, timeout=120)
    finally:
        orch.stop()
    assert final.status == "completed"
    assert json.loads(final.data.data or b"{}")["notes"] == ["research by src", "draft by fork-1"]
    prefix, codec = settings.topics.prefix, AvroCodec()
    by_saga = journals(settings.kafka_bootstrap_servers, prefix, codec)
    check_saga_invariants(settings.kafka_bootstrap_servers, prefix, codec, ["src", "fork-1"])
    events = [e for x in by_saga["fork-1"] for e in x.events]
    assert [e.source_saga_id for e in events if isinstance(e, SagaForked)] == ["src"]
    tasks = [
        codec.decode(r.value, TASK_TYPES)
        for r in read_committed(settings.kafka_bootstrap_servers, f"{prefix}.tasks")
        if r.key == "fork-1" and r.value is not None
    ]
    # research is never run for the fork (a slow restart may time out and retry draft:
    # another attempt, never a duplicate task, which check_saga_invariants rules out)
    assert {t.step for t in tasks if isinstance(t, ExecuteStep)} == {"draft", "publish"}
    assert audit_entries({k: by_saga[k] for k in ("src", "fork-1")}).findings == []
    checked, divergences = check_saga(by_saga["fork-1"], lambda _t, _v: ForkPipe)
    assert checked == len(by_saga["fork-1"]) and divergences == []


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    conn = ("--bootstrap", settings.kafka_bootstrap_servers, "--prefix", settings.topics.prefix)
    return subprocess.run(
        [sys.executable, "-m", "sagaline.orchestrator.cli", *args, *conn],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_shows_the_view_approves_on_it_and_forks(
    settings: Settings, database_url: str, schema: str
) -> None:
    with ThreadedStack(settings, REGISTRY, database_url, schema), SagaClient(settings) as client:
        handle = client.start(BoundRefund, Refund(order="o-9"), saga_id="cli-bound")
        sha = _view(_until(client, "cli-bound", lambda s: _view(s) is not None))
        shown = _cli(settings, "approval", "cli-bound", "manager_ok", "--json")
        assert shown.returncode == 0, shown.stderr
        view = json.loads(shown.stdout)
        assert view["shown"] == {"order": "o-9", "amount_cents": 700}
        assert view["shown_sha256"] == sha and view["bound"] is True
        approve = _cli(
            settings, "approve", "cli-bound", "manager_ok", "--by", "alice", "--seen", sha or ""
        )
        assert approve.returncode == 0, approve.stderr
        assert handle.wait(60).status == "completed"
        bad = _cli(settings, "fork", "cli-bound", "--from-step", "nope", "--id", "cli-fork")
        assert bad.returncode == 2
        assert bad.stderr.strip().splitlines() == [
            "sagaline: error: saga 'cli-bound' never dispatched step 'nope' (it dispatched: quote)"
        ]
        fork = _cli(settings, "fork", "cli-bound", "--from-step", "quote", "--id", "cli-fork")
        assert fork.returncode == 0, fork.stderr
        assert "as cli-fork" in fork.stdout
        forked = _until(client, "cli-fork", lambda s: _view(s) is not None)
        assert forked.data == client.status("cli-bound").data  # type: ignore[union-attr]
