"""Pure parts of the worker: offsets, replies, classification, step context, lookup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from sagaline.consumers.context import WorkerStepContext
from sagaline.consumers.errors import HandlerNotFound, NoDatabaseInStep, StepTimeout, WorkerError
from sagaline.consumers.handlers import Handler, RegistryResolver, StepTable, handler_uses_db
from sagaline.consumers.migrations import LATEST_VERSION, MIGRATIONS
from sagaline.consumers.offsets import OffsetTracker
from sagaline.consumers.replies import failure_reply, restamp, success_reply
from sagaline.consumers.runner import classify
from sagaline.consumers.store import OUTBOX_SHARDS, shard_of
from sagaline.orchestrator.chaos.effects import (
    EffectArgs,
    InsufficientFunds,
    compensate_task,
    execute_task,
)
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import RetryableError, TerminalError
from sagaline.orchestrator.core.policies import Retry
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, step
from sagaline.schemas.base import Usage
from sagaline.schemas.errors import PayloadError
from sagaline.schemas.replies import CompensationSucceeded, StepFailed, StepSucceeded

pytestmark = pytest.mark.unit


def test_offsets_commit_only_the_contiguous_done_prefix() -> None:
    tracker: OffsetTracker[str, str] = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.add("p0", offset)
    tracker.add("p1", 5)
    assert tracker.done("p0", 12, ["r12"])
    assert tracker.pop_ready() == {}  # 10 and 11 still run
    tracker.done("p0", 10, ["r10"])
    ready = tracker.pop_ready()
    assert ready["p0"].next_offset == 11 and ready["p0"].items == ["r10"]
    tracker.done("p0", 11)
    ready = tracker.pop_ready()
    assert ready["p0"].next_offset == 13 and ready["p0"].items == ["r12"]
    assert tracker.is_pending("p0", 13) and tracker.pending() == 2
    tracker.forget(["p1"])
    assert not tracker.done("p1", 5)  # a revoked partition's completion is ignored
    assert tracker.pending() == 1


def test_restamp_keeps_a_redelivery_identical_and_readdresses_a_retry() -> None:
    first = execute_task("s", "write", EffectArgs())
    reply = success_reply(first, None, Usage(tokens_in=3))
    assert isinstance(reply, StepSucceeded)
    assert restamp(reply, first) is reply
    retry = execute_task("s", "write", EffectArgs(), attempt=3)
    again = restamp(reply, retry)
    assert isinstance(again, StepSucceeded)
    assert (again.attempt, again.task_id) == (3, retry.task_id)
    assert again.envelope.message_id != reply.envelope.message_id
    assert again.envelope.causation_id == retry.envelope.message_id
    assert again.usage == reply.usage and again.idempotency_key == reply.idempotency_key


def test_reply_types_follow_the_task_kind() -> None:
    undo = compensate_task("s", "write", EffectArgs())
    assert isinstance(success_reply(undo, None, Usage()), CompensationSucceeded)
    failed = failure_reply(
        execute_task("s", "write", EffectArgs()),
        retryable=False,
        error_type="X",
        error_message="y" * 10_000,
        usage=Usage(),
    )
    assert isinstance(failed, StepFailed) and len(failed.error_message) == 4000
    # one message id per task attempt: duplicates are recognisable
    task = execute_task("s", "write", EffectArgs())
    ok = success_reply(task, None, Usage())
    bad = failure_reply(task, retryable=True, error_type="E", error_message="", usage=Usage())
    assert isinstance(ok, StepSucceeded) and isinstance(bad, StepFailed)
    assert ok.envelope.message_id == bad.envelope.message_id


def test_classification() -> None:
    handler = Handler(fn=lambda ctx, args: None, non_retryable=(InsufficientFunds,))
    assert classify(RetryableError("later"), handler)
    assert classify(RuntimeError("bug"), handler)
    assert classify(StepTimeout("slow"), handler)
    assert not classify(TerminalError("no"), handler)
    assert not classify(InsufficientFunds("broke"), handler)
    assert not classify(PayloadError("bad args"), handler)
    assert classify(InsufficientFunds("broke"), None)


def _context(**overrides: object) -> WorkerStepContext:
    beats: list[tuple[float | None, str | None]] = []
    values: dict[str, object] = {
        "saga_id": "s",
        "saga_type": "t",
        "step": "a",
        "attempt": 1,
        "idempotency_key": "s/a",
        "task_id": "s/a/1",
        "kind": "step",
        "deadline": None,
        "db": None,
        "heartbeat_sink": lambda p, d: beats.append((p, d)),
        "heartbeat_interval": 3600.0,
    }
    values.update(overrides)
    ctx = WorkerStepContext(**values)  # type: ignore[arg-type]
    ctx.beats = beats  # type: ignore[attr-defined]
    return ctx


def test_step_context() -> None:
    ctx = _context()
    assert isinstance(ctx, StepContext)  # implements the orchestrator's protocol
    ctx.heartbeat(0.1, "one")
    ctx.heartbeat(0.2, "two")  # rate-limited
    assert ctx.beats == [(0.1, "one")]  # type: ignore[attr-defined]
    assert ctx.fraction == 0.2
    ctx.report_usage(llm_calls=1, tokens_in=5)
    ctx.report_usage(tokens_out=7, cost_micros=30)
    assert ctx.usage == Usage(llm_calls=1, tokens_in=5, tokens_out=7, cost_micros=30)
    assert not ctx.db
    with pytest.raises(NoDatabaseInStep):
        ctx.db.execute("SELECT 1")
    late = _context(deadline=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(StepTimeout):
        late.heartbeat()


def _crash_child(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Pass ``worker_after_step`` three times in a fresh process, then print ``survived``."""
    code = (
        "from sagaline.consumers.crash import crash_point\n"
        "for n in range(3):\n"
        "    print(f'pass {n}', flush=True)\n"
        "    crash_point('worker_after_step')\n"
        "print('survived', flush=True)\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("SAGALINE_CRASH")}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_crash_point_kills_only_at_its_point_after_the_skips() -> None:
    inert = _crash_child({})
    assert (inert.returncode, inert.stdout.split()[-1]) == (0, "survived")
    other = _crash_child({"SAGALINE_CRASH_AT": "relay_after_publish"})
    assert (other.returncode, other.stdout.split()[-1]) == (0, "survived")
    killed = _crash_child({"SAGALINE_CRASH_AT": "worker_after_step"})
    assert killed.returncode == -signal.SIGKILL
    assert killed.stdout.split() == ["pass", "0"]
    skipped = _crash_child({"SAGALINE_CRASH_AT": "worker_after_step", "SAGALINE_CRASH_SKIP": "2"})
    assert skipped.returncode == -signal.SIGKILL
    assert skipped.stdout.split() == ["pass", "0", "pass", "1", "pass", "2"]


def test_migrations_and_shards() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1))
    assert '"sagaline_x".inbox' in MIGRATIONS[0].render("sagaline_x")
    with pytest.raises(WorkerError):
        MIGRATIONS[0].render("x; DROP TABLE y")
    assert all(0 <= shard_of(f"saga-{i}".encode()) < OUTBOX_SHARDS for i in range(100))


def test_shard_of_is_crc32_and_the_same_in_every_process() -> None:
    keys = [f"saga-{i}".encode() for i in range(200)]
    assert [shard_of(k) for k in keys] == [zlib.crc32(k) % OUTBOX_SHARDS for k in keys]
    # fixed values: a process-salted hash() would differ between runs
    assert [shard_of(f"saga-{i}".encode()) for i in range(8)] == [31, 9, 19, 5, 6, 16, 10, 28]
    code = "from sagaline.consumers.store import shard_of; print(shard_of(b'same'))"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert seen == {str(zlib.crc32(b"same") % OUTBOX_SHARDS)}


class _Data(BaseModel):
    n: int = 0


class _Result(BaseModel):
    value: int


class _Tiny(Saga[_Data]):
    type_name = "tiny"

    @step(retry=Retry(max_attempts=2), timeout=timedelta(seconds=5))
    def charge(self, ctx: StepContext, data: _Data) -> _Result:
        return _Result(value=data.n + 1)

    @charge.compensation
    def refund(self, ctx: StepContext, data: _Data) -> None:
        return None


def test_registry_resolver_finds_steps_and_compensations() -> None:
    resolver = RegistryResolver(SagaRegistry([_Tiny]))
    handler = resolver.resolve("tiny", 1, "step", "charge")
    assert handler.args_type is _Data and handler.result_type is _Result
    assert handler.timeout == timedelta(seconds=5) and handler_uses_db(handler)
    assert handler.fn(None, _Data(n=1)) == _Result(value=2)
    assert resolver.resolve("tiny", 1, "compensate", "charge").fn is not None
    with pytest.raises(HandlerNotFound):
        resolver.resolve("tiny", 1, "step", "missing")
    with pytest.raises(HandlerNotFound):
        resolver.resolve("other", 1, "step", "charge")
    table = StepTable()
    with pytest.raises(HandlerNotFound):
        table.resolve("tiny", 1, "step", "charge")
