"""Issue 15 on real Kafka and PostgreSQL: approvals bound to what was seen, model fallback.

The orchestrator, a real worker (inbox/outbox in PostgreSQL) and the relay
run in threads; the client approves with the SHA-256 it read from the
saga's snapshot.  The journal read back from Kafka carries the decisions.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg
import pytest
from orchestrator_support import check_saga_invariants, delete_prefix_topics, journals
from pydantic import BaseModel

from sagaline.consumers.handlers import RegistryResolver
from sagaline.consumers.migrations import migrate
from sagaline.consumers.relay import Relay, RelayOptions
from sagaline.consumers.worker import Worker, WorkerOptions
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn
from sagaline.orchestrator.core.audit_rules import audit_saga
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import RetryableError
from sagaline.orchestrator.core.journal import fold_journal, verify_chain
from sagaline.orchestrator.core.policies import Retry
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, agent, approval, step
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.events import AgentTurnRecorded, ModelFallback, SignalRejected
from sagaline.schemas.state import SagaState

pytestmark = pytest.mark.integration


class Refund(BaseModel):
    order: str
    amount_cents: int = 0
    quotes: int = 0


class Shown(BaseModel):
    order: str
    amount_cents: int


class Quote(BaseModel):
    amount_cents: int


class BoundRefund(Saga[Refund]):
    type_name = "it.bound-refund"

    @step(uses_db=False, timeout=timedelta(seconds=30))
    def quote(self, ctx: StepContext, data: Refund) -> Quote:
        return Quote(amount_cents=700 + 200 * data.quotes)  # each quote is another amount

    @quote.on_result
    def _quoted(self, data: Refund, result: Quote) -> Refund:
        return data.model_copy(
            update={"amount_cents": result.amount_cents, "quotes": data.quotes + 1}
        )

    manager_ok = approval(timeout=timedelta(minutes=5), on_reject=quote)

    @manager_ok.shows
    def _shown(self, data: Refund) -> Shown:
        return Shown(order=data.order, amount_cents=data.amount_cents)


class Question(BaseModel):
    text: str
    answer: str | None = None


class Research(Saga[Question]):
    type_name = "it.fallback"

    think = agent(
        tools=[],
        models=["flaky-model", "steady-model"],
        retry=Retry(max_attempts=2, initial=timedelta(milliseconds=200), jitter=0.0),
        timeout=timedelta(seconds=30),
    )

    @think.llm
    def _llm(self, ctx: StepContext, turn: AgentTurn) -> AgentDecision:
        ctx.report_usage(llm_calls=1, tokens_in=10, cost_micros=5)
        if turn.model == "flaky-model":
            raise RetryableError("503 from the flaky provider")
        return AgentDecision.final(f"answered by {turn.model}")

    @think.on_answer
    def _answer(self, data: Question, answer: str) -> Question:
        return data.model_copy(update={"answer": answer})


REGISTRY = SagaRegistry([BoundRefund, Research])


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


class Stack:
    """Orchestrator, worker and relay in threads for a ``with`` block."""

    def __init__(self, settings: Settings, database_url: str, schema: str) -> None:
        prefix = settings.topics.prefix
        config = EngineConfig(instance_id="a", group_id=f"{prefix}-orch")
        self.orch = Orchestrator(settings, CoreLogic(REGISTRY), config, codec=AvroCodec())
        self.worker = Worker(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            database_url=database_url,
            topics=settings.topics,
            resolver=RegistryResolver(REGISTRY),
            options=WorkerOptions(group_id=f"{prefix}-workers", schema=schema),
        )
        self.relay = Relay(
            database_url,
            settings.kafka_bootstrap_servers,
            RelayOptions(schema=schema, poll_interval=0.2),
        )
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.orch.run, daemon=True),
            threading.Thread(target=self.worker.run, args=(self.stop,), daemon=True),
            threading.Thread(target=self.relay.run, args=(self.stop,), daemon=True),
        ]

    def __enter__(self) -> Stack:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.orch.request_stop()
        self.stop.set()
        for t in self.threads:
            t.join(30)
        self.relay.close()


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
    with Stack(settings, database_url, schema), SagaClient(settings) as client:
        handle = client.start(BoundRefund, Refund(order="o-1"), saga_id="bound-1")
        first = _view(_until(client, "bound-1", lambda s: _view(s) is not None))
        client.reject("bound-1", "manager_ok", by="bob", note="quote again")
        second_state = _until(client, "bound-1", lambda s: _view(s) not in (None, first))
        second = _view(second_state)
        client.approve("bound-1", "manager_ok", by="alice", seen_sha256=first)  # she saw 700
        client.approve("bound-1", "manager_ok", by="alice")  # no hash at all
        time.sleep(1.0)
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
    with Stack(settings, database_url, schema), SagaClient(settings) as client:
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
