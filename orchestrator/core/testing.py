"""``SagaTestKit``: drive a saga definition through the pure decider, no Kafka.

Given/expect style with a fake clock; steps and waits are named by the node
(``kit.succeed(RefundAgent.check_eligibility, ...)``, checked by mypy) or by
name::

    kit = SagaTestKit(RefundAgent)
    kit.start(RefundData(order_id="o-1", amount_cents=5_000))
    kit.succeed("check_eligibility", Eligibility(eligible=True))
    kit.advance(days=7)                   # fires the approval timeout
    kit.expect_compensations(["update_record"])
    kit.expect_status("compensated")

The kit feeds inputs to :func:`sagaline.orchestrator.core.decider.decide` exactly as the
runtime does, journals every decision (hash chain included) and checks after
every input that folding the journal gives the state snapshot.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, TypeVar, overload

from pydantic import BaseModel

from sagaline.orchestrator.core.context import check_progress
from sagaline.orchestrator.core.decider import (
    Decision,
    Input,
    Outgoing,
    decide,
    pending_timers,
    timer_input,
)
from sagaline.orchestrator.core.errors import RetryableError, TerminalError, TestKitError
from sagaline.orchestrator.core.fork import plan_fork
from sagaline.orchestrator.core.journal import fold_journal, record_decision, verify_chain
from sagaline.orchestrator.core.limit_kit import KitLimiters
from sagaline.orchestrator.core.nodes.base import Node, ref_name
from sagaline.orchestrator.core.nodes.child import ChildSpec
from sagaline.orchestrator.core.nodes.step import StepSpec
from sagaline.orchestrator.core.payloads import from_payload, input_sha256, to_payload
from sagaline.orchestrator.core.saga import Saga
from sagaline.schemas.base import Envelope, Payload, Record, Usage
from sagaline.schemas.commands import (
    CancelSaga,
    PauseSaga,
    ResumeSaga,
    RetryStep,
    SignalSaga,
    SkipStep,
    StartSaga,
)
from sagaline.schemas.events import SagaEvent
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.personal import use_test_keys
from sagaline.schemas.replies import (
    CompensationFailed,
    CompensationSucceeded,
    StepFailed,
    StepHeartbeat,
    StepSucceeded,
)
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = ["SagaTestKit", "TestStepContext"]

DataT = TypeVar("DataT", bound=BaseModel)
R = TypeVar("R")

#: A node reference or its name: the kit accepts either wherever it takes a step or a wait.
Ref = str | Node

DEFAULT_START = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class TestStepContext:
    """An in-memory :class:`~sagaline.orchestrator.core.context.StepContext` for tests."""

    __test__ = False

    saga_id: str
    saga_type: str
    step: str
    attempt: int
    idempotency_key: str
    deadline: datetime | None = None
    db: Any = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("sagaline.test"))
    heartbeats: list[tuple[float | None, str | None]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    #: every ``ctx.progress(message, fraction, partial)`` call, in order
    progress_items: list[tuple[str | None, float | None, str | None]] = field(default_factory=list)

    def heartbeat(self, progress: float | None = None, detail: str | None = None) -> None:
        self.heartbeats.append((progress, detail))

    def progress(
        self, message: str | None = None, fraction: float | None = None, partial: str | None = None
    ) -> None:
        check_progress(message, fraction, partial)
        self.progress_items.append((message, fraction, partial))

    def report_usage(
        self, *, llm_calls: int = 0, tokens_in: int = 0, tokens_out: int = 0, cost_micros: int = 0
    ) -> None:
        u = self.usage
        self.usage = Usage(
            llm_calls=u.llm_calls + llm_calls,
            tokens_in=u.tokens_in + tokens_in,
            tokens_out=u.tokens_out + tokens_out,
            cost_micros=u.cost_micros + cost_micros,
        )


class SagaTestKit(Generic[DataT]):
    """Start a saga, feed replies, signals and commands, advance a fake clock, expect outcomes."""

    __test__ = False

    def __init__(
        self,
        definition: type[Saga[DataT]],
        *,
        saga_id: str = "saga-1",
        now: datetime = DEFAULT_START,
        check_fold: bool = True,
    ) -> None:
        use_test_keys()  # personal fields: encrypted with the kit's fixed test key
        self.definition = definition
        self.saga_id = saga_id
        self.now = now
        self.check_fold = check_fold
        self.state: SagaState | None = None
        self.journal: list[JournalEntry] = []
        self.outgoing: list[Outgoing] = []
        self.decisions: list[Decision] = []
        self.inputs: list[Input] = []
        self._pending: dict[str, ExecuteStep | CompensateStep] = {}
        self._counter = 0
        self.limiters = KitLimiters()  # concurrency/rate limits: grants come back at once
        #: what the steps ``run_steps`` ran published: (step, message, fraction, partial)
        self.progress: list[tuple[str, str | None, float | None, str | None]] = []

    # -- feeding inputs --------------------------------------------------------

    def envelope(self, saga_id: str | None = None) -> Envelope:
        """A fresh envelope for an input at the kit's current time."""
        self._counter += 1
        return Envelope(
            message_id=f"kit-{self.saga_id}-{self._counter}",
            saga_id=saga_id or self.saga_id,
            saga_type=self.definition.type_name,
            saga_version=self.definition.version,
            occurred_at=self.now,
            correlation_id=self.saga_id,
        )

    def deliver(self, input: Input) -> Decision:
        """Feed any input (also a copy of an earlier one, to test duplicates)."""
        before = self.state
        decision = decide(self.definition, before, input)
        entry, stamped = record_decision(before, input, decision)
        self.inputs.append(input)
        self.decisions.append(decision)
        if entry is not None:
            self.journal.append(entry)
        self.state = stamped
        for out in decision.outgoing:
            self.outgoing.append(out)
            rec = out.record
            if isinstance(rec, ExecuteStep):
                self._pending[f"step:{rec.step}"] = rec
            elif isinstance(rec, CompensateStep):
                self._pending[f"compensate:{rec.step}"] = rec
        if self.check_fold:
            self._check_invariants()
        for grant in self.limiters.route(decision.outgoing):
            self.deliver(grant)
        return decision

    def fork(
        self,
        from_step: Ref,
        *,
        definition: type[Saga[Any]] | None = None,
        saga_id: str | None = None,
    ) -> SagaTestKit[Any]:
        """A new kit whose saga is a fork of this one from ``from_step`` (under
        ``definition``, by default this kit's), started at the kit's time."""
        defn = definition or self.definition
        kit: SagaTestKit[Any] = SagaTestKit(
            defn, saga_id=saga_id or f"{self.saga_id}-fork", now=self.now
        )
        start = plan_fork(
            self.journal,
            ref_name(from_step),
            saga_id=kit.saga_id,
            version=defn.version,
            now=kit.now,
        )
        decision = kit.deliver(start)
        if decision.rejected is not None:
            raise TestKitError(decision.rejected)
        return kit

    def _check_invariants(self) -> None:
        if self.journal and fold_journal(self.journal) != self.state:
            raise TestKitError("folding the journal does not give the state snapshot")
        problems = verify_chain(self.journal)
        if problems:
            raise TestKitError(f"journal chain broken: {problems}")

    def start(self, data: DataT, *, deadline_at: datetime | None = None) -> Decision:
        """Start the saga with ``data``."""
        payload = to_payload(data)
        return self.deliver(
            StartSaga(
                envelope=self.envelope(),
                data=payload,
                input_sha256=input_sha256(payload),
                requested_by="test",
                deadline_at=deadline_at,
            )
        )

    def _task(self, step: str, kind: str = "step") -> ExecuteStep | CompensateStep:
        task = self._pending.get(f"{kind}:{step}")
        if task is None:
            raise TestKitError(
                f"no pending {kind} task {step!r}; pending: {sorted(self._pending) or 'none'}"
            )
        return task

    @overload
    def succeed(
        self, step: StepSpec[Any, R], result: R | None = None, *, usage: Usage | None = None
    ) -> Decision: ...

    @overload
    def succeed(
        self,
        step: str | ChildSpec[Any],
        result: BaseModel | None = None,
        *,
        usage: Usage | None = None,
    ) -> Decision: ...

    def succeed(self, step: Ref, result: Any = None, *, usage: Usage | None = None) -> Decision:
        """Reply success to the latest task of ``step`` (a name or the node) with ``result``."""
        step = ref_name(step)
        task = self._task(step)
        del self._pending[f"step:{step}"]
        return self.deliver(
            StepSucceeded(
                envelope=self.envelope(),
                step=step,
                attempt=task.attempt,
                idempotency_key=task.idempotency_key,
                task_id=task.task_id,
                result=to_payload(result) if result is not None else None,
                usage=usage or Usage(),
            )
        )

    def fail(
        self,
        step: Ref,
        error: str = "boom",
        *,
        retryable: bool = True,
        error_type: str = "RuntimeError",
        usage: Usage | None = None,
    ) -> Decision:
        """Reply failure to the latest task of ``step``."""
        step = ref_name(step)
        task = self._task(step)
        del self._pending[f"step:{step}"]
        return self.deliver(
            StepFailed(
                envelope=self.envelope(),
                step=step,
                attempt=task.attempt,
                idempotency_key=task.idempotency_key,
                task_id=task.task_id,
                retryable=retryable,
                error_type=error_type,
                error_message=error,
                usage=usage or Usage(),
            )
        )

    def heartbeat(self, step: Ref, progress: float | None = None) -> Decision:
        """A heartbeat from the latest task of ``step``."""
        step = ref_name(step)
        task = self._task(step)
        return self.deliver(
            StepHeartbeat(
                envelope=self.envelope(),
                step=step,
                attempt=task.attempt,
                task_id=task.task_id,
                progress=progress,
            )
        )

    def compensated(self, step: Ref) -> Decision:
        """Reply success to the pending compensation of ``step``."""
        step = ref_name(step)
        task = self._task(step, "compensate")
        del self._pending[f"compensate:{step}"]
        return self.deliver(
            CompensationSucceeded(
                envelope=self.envelope(),
                step=step,
                attempt=task.attempt,
                idempotency_key=task.idempotency_key,
                task_id=task.task_id,
            )
        )

    def compensation_failed(
        self, step: Ref, error: str = "boom", *, retryable: bool = True
    ) -> Decision:
        """Reply failure to the pending compensation of ``step``."""
        step = ref_name(step)
        task = self._task(step, "compensate")
        del self._pending[f"compensate:{step}"]
        return self.deliver(
            CompensationFailed(
                envelope=self.envelope(),
                step=step,
                attempt=task.attempt,
                idempotency_key=task.idempotency_key,
                task_id=task.task_id,
                retryable=retryable,
                error_type="RuntimeError",
                error_message=error,
            )
        )

    def signal(
        self,
        name: Ref,
        *,
        by: str = "tester",
        approved: bool | None = None,
        note: str | None = None,
        payload: BaseModel | None = None,
        seen_sha256: str | None = None,
    ) -> Decision:
        """Send signal ``name``."""
        return self.deliver(
            SignalSaga(
                envelope=self.envelope(),
                name=ref_name(name),
                by=by,
                approved=approved,
                note=note,
                payload=to_payload(payload) if payload is not None else None,
                seen_sha256=seen_sha256,
            )
        )

    def shown_sha256(self, name: Ref) -> str | None:
        """The SHA-256 of what the open wait ``name`` shows its approver (bound approvals)."""
        wait = next((w for w in self._state().waits if w.name == ref_name(name)), None)
        return wait.shown_sha256 if wait is not None else None

    def approve(
        self,
        name: Ref,
        *,
        by: str = "tester",
        note: str | None = None,
        seen_sha256: str | None = None,
    ) -> Decision:
        """Approve the wait ``name``; a bound approval is approved on what it shows now
        unless ``seen_sha256`` names another view."""
        seen = seen_sha256 if seen_sha256 is not None else self.shown_sha256(name)
        return self.signal(name, by=by, approved=True, note=note, seen_sha256=seen)

    def reject(self, name: Ref, *, by: str = "tester", note: str | None = None) -> Decision:
        """Reject the wait ``name``."""
        return self.signal(name, by=by, approved=False, note=note)

    def cancel(self, *, by: str = "operator", reason: str | None = None) -> Decision:
        return self.deliver(CancelSaga(envelope=self.envelope(), by=by, reason=reason))

    def pause(self, *, by: str = "operator", reason: str | None = None) -> Decision:
        return self.deliver(PauseSaga(envelope=self.envelope(), by=by, reason=reason))

    def resume(self, *, by: str = "operator", reason: str | None = None) -> Decision:
        return self.deliver(ResumeSaga(envelope=self.envelope(), by=by, reason=reason))

    def retry_step(self, step: Ref, *, by: str = "operator") -> Decision:
        return self.deliver(RetryStep(envelope=self.envelope(), step=ref_name(step), by=by))

    def skip_step(
        self, step: Ref, result: BaseModel | None = None, *, by: str = "operator"
    ) -> Decision:
        return self.deliver(
            SkipStep(
                envelope=self.envelope(),
                step=ref_name(step),
                by=by,
                result=to_payload(result) if result is not None else None,
            )
        )

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> list[Decision]:
        """Move the fake clock forward (``advance(days=7)``), firing due timers in order."""
        target = self.now + (delta or timedelta()) + timedelta(**kwargs)
        fired: list[Decision] = []
        while self.state is not None:
            due = [t for t in pending_timers(self.state) if t.due_at <= target]
            if not due:
                break
            timer = due[0]
            self.now = max(self.now, timer.due_at)
            self._counter += 1
            fired.append(self.deliver(timer_input(self.state, timer, self.now)))
        self.now = target
        fired.extend(self.deliver(grant) for grant in self.limiters.due(self.now))
        return fired

    # -- expectations ---------------------------------------------------------

    @property
    def data(self) -> DataT:
        """The saga data as its model."""
        state = self._state()
        return from_payload(state.data, self.definition.data_type)  # type: ignore[return-value]

    @property
    def events(self) -> list[SagaEvent]:
        return [e for entry in self.journal for e in entry.events]

    @property
    def pending_tasks(self) -> list[ExecuteStep | CompensateStep]:
        return list(self._pending.values())

    def _state(self) -> SagaState:
        if self.state is None:
            raise TestKitError("the saga has not started")
        return self.state

    def expect_task(self, step: Ref) -> ExecuteStep:
        """The pending task of ``step`` (fails when there is none)."""
        task = self._task(ref_name(step))
        assert isinstance(task, ExecuteStep)
        return task

    def expect_tasks(self, steps: Sequence[Ref]) -> None:
        """Exactly these steps have pending tasks."""
        expected = sorted(ref_name(s) for s in steps)
        pending = sorted(k.partition(":")[2] for k in self._pending if k.startswith("step:"))
        if pending != expected:
            raise TestKitError(f"expected pending tasks {expected}, got {pending}")

    def expect_no_tasks(self) -> None:
        if self._pending:
            raise TestKitError(f"expected no pending tasks, got {sorted(self._pending)}")

    def expect_status(self, status: str) -> None:
        actual = self._state().status
        if actual != status:
            reason = self._state().outcome_reason or self._state().pause_reason
            raise TestKitError(f"expected status {status!r}, got {actual!r} ({reason})")

    def expect_waiting_for(self, name: Ref) -> None:
        name = ref_name(name)
        names = [w.name for w in self._state().waits]
        if name not in names:
            raise TestKitError(f"expected a wait {name!r}, open waits: {names}")

    def expect_event(self, event_type: type[Record] | str, **fields: Any) -> SagaEvent:
        """The last event of ``event_type`` (a class or a name) whose fields match ``fields``."""
        name = event_type if isinstance(event_type, str) else event_type.__name__
        for event in reversed(self.events):
            kind_matches = (
                type(event).__name__ == name
                if isinstance(event_type, str)
                else isinstance(event, event_type)
            )
            if kind_matches and all(getattr(event, k) == v for k, v in fields.items()):
                return event
        raise TestKitError(f"no {name} event with {fields}")

    def expect_compensations(self, steps: Sequence[Ref]) -> None:
        """Expect compensations of exactly ``steps``, one at a time in order; complete each.

        Afterwards no other compensation may be pending.
        """
        for ref in steps:
            step = ref_name(ref)
            pending = [k for k in self._pending if k.startswith("compensate:")]
            if pending != [f"compensate:{step}"]:
                raise TestKitError(f"expected the compensation of {step!r}, pending: {pending}")
            self.compensated(step)
        left = [k for k in self._pending if k.startswith("compensate:")]
        if left:
            raise TestKitError(f"unexpected compensations pending: {left}")

    def compensated_steps(self) -> list[str]:
        """Steps compensated so far, in order."""
        from sagaline.schemas.events import StepCompensated

        return [e.step for e in self.events if isinstance(e, StepCompensated)]

    # -- running the step functions in-process --------------------------------

    def run_steps(
        self, *, max_tasks: int = 1000, instance: Saga[DataT] | None = None, db: Any = None
    ) -> int:
        """Run pending tasks with the definition's own handlers until none is pending.

        ``db`` is what steps see as ``ctx.db`` (a test double or a real
        connection).  Returns how many tasks ran.  Waits and timers are left
        to the test (``approve``, ``advance``).
        """
        ran = 0
        while self._pending and ran < max_tasks:
            key, task = next(iter(self._pending.items()))
            del self._pending[key]
            self._run_task(task, instance, db)
            ran += 1
        return ran

    def _run_task(
        self, task: ExecuteStep | CompensateStep, instance: Saga[DataT] | None, db: Any
    ) -> None:
        kind: Literal["step", "compensate"] = (
            "step" if isinstance(task, ExecuteStep) else "compensate"
        )
        handler = self.definition.handler_for(kind, task.step, instance=instance)
        ctx = TestStepContext(
            saga_id=task.envelope.saga_id,
            saga_type=task.envelope.saga_type,
            step=task.step,
            attempt=task.attempt,
            idempotency_key=task.idempotency_key,
            deadline=task.deadline_at,
            db=db,
        )
        args = from_payload(task.args, handler.args_type)
        error: BaseException | None = None
        value: Any = None
        try:
            value = handler.fn(ctx, args)
            if inspect.isawaitable(value):
                value = asyncio.run(_await(value))
        except Exception as exc:
            error = exc
        self.progress.extend((task.step, *item) for item in ctx.progress_items)
        common: dict[str, Any] = {
            "envelope": self.envelope(),
            "step": task.step,
            "attempt": task.attempt,
            "idempotency_key": task.idempotency_key,
            "task_id": task.task_id,
        }
        if error is not None:
            retryable = not isinstance(error, (TerminalError, *handler.non_retryable))
            if isinstance(error, RetryableError):
                retryable = True
            failure = {
                "retryable": retryable,
                "error_type": type(error).__name__,
                "error_message": str(error),
            }
            if kind == "step":
                self.deliver(StepFailed(**common, **failure, usage=ctx.usage))
            else:
                self.deliver(CompensationFailed(**common, **failure))
            return
        if kind == "step":
            result: Payload | None = to_payload(value) if isinstance(value, BaseModel) else None
            self.deliver(StepSucceeded(**common, result=result, usage=ctx.usage))
        else:
            self.deliver(CompensationSucceeded(**common))


async def _await(value: Any) -> Any:
    return await value
