"""Sagas with local steps (``@step(local=True)``) for the local-step tests.

Every step function appends one line ``<saga id>/<step>`` to the file named by
``SAGALINE_TEST_CALLS`` (when set): a record of every execution that survives a SIGKILL of
the process that ran it.  The database steps insert one row per execution into
``local_effects`` (no unique key: a second execution would show as a second row), after
sleeping ``SAGALINE_TEST_STEP_SLEEP_S`` seconds (the chaos test widens its kill windows).
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import TerminalError
from sagaline.orchestrator.core.policies import Retry
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, step

EFFECTS_TABLE = "CREATE TABLE IF NOT EXISTS local_effects (saga_id text, step text)"


class LocalData(BaseModel):
    label: str = ""
    count: int = 0
    fail_at: str = ""


class Count(BaseModel):
    n: int


def record_call(ctx: StepContext, step_name: str) -> None:
    """Append ``saga/step`` to the calls file (fsync'd: it must survive a SIGKILL)."""
    path = os.environ.get("SAGALINE_TEST_CALLS")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{ctx.saga_id}/{step_name}\n")
        f.flush()
        os.fsync(f.fileno())


def _bump(ctx: StepContext, data: LocalData, name: str) -> Count:
    record_call(ctx, name)
    if data.fail_at == name:
        raise TerminalError(f"{name} refuses {data.label!r}")
    return Count(n=data.count + 1)


def _effect(ctx: StepContext, name: str) -> None:
    record_call(ctx, name)
    time.sleep(float(os.environ.get("SAGALINE_TEST_STEP_SLEEP_S", "0")))  # widen kill windows
    ctx.db.execute("INSERT INTO local_effects (saga_id, step) VALUES (%s, %s)", (ctx.saga_id, name))


class LocalChain(Saga[LocalData]):
    """Three local steps without a database, each counting one up."""

    type_name = "test.local-chain"

    @step(local=True, uses_db=False, compensate=None)
    def one(self, ctx: StepContext, data: LocalData) -> Count:
        return _bump(ctx, data, "one")

    @step(local=True, uses_db=False, compensate=None)
    def two(self, ctx: StepContext, data: LocalData) -> Count:
        return _bump(ctx, data, "two")

    @step(local=True, uses_db=False, compensate=None)
    def three(self, ctx: StepContext, data: LocalData) -> Count:
        return _bump(ctx, data, "three")

    @one.on_result
    def _one(self, data: LocalData, result: Count) -> LocalData:
        return data.model_copy(update={"count": result.n})

    @two.on_result
    def _two(self, data: LocalData, result: Count) -> LocalData:
        return data.model_copy(update={"count": result.n})

    @three.on_result
    def _three(self, data: LocalData, result: Count) -> LocalData:
        return data.model_copy(update={"count": result.n})


class Mixed(Saga[LocalData]):
    """local → remote (a worker or the test's responder) → local, the first compensable."""

    type_name = "test.local-mixed"

    @step(local=True, uses_db=False)
    def reserve(self, ctx: StepContext, data: LocalData) -> Count:
        return _bump(ctx, data, "reserve")

    @reserve.compensation
    def release(self, ctx: StepContext, data: LocalData) -> None:
        record_call(ctx, "release")

    @step(uses_db=False, compensate=None)
    def remote(self, ctx: StepContext, data: LocalData) -> None:
        return None

    @step(local=True, uses_db=False, compensate=None)
    def finish(self, ctx: StepContext, data: LocalData) -> Count:
        return _bump(ctx, data, "finish")

    @reserve.on_result
    def _reserve(self, data: LocalData, result: Count) -> LocalData:
        return data.model_copy(update={"count": result.n})


class LocalDb(Saga[LocalData]):
    """Three local database steps, each inserting one effect row; the first compensable."""

    type_name = "test.local-db"

    @step(local=True)
    def debit(self, ctx: StepContext, data: LocalData) -> None:
        _effect(ctx, "debit")

    @debit.compensation
    def refund(self, ctx: StepContext, data: LocalData) -> None:
        _effect(ctx, "refund")

    @step(local=True, compensate=None)
    def credit(self, ctx: StepContext, data: LocalData) -> None:
        _effect(ctx, "credit")
        if data.fail_at == "credit":
            raise TerminalError("credit refused")

    @step(local=True, compensate=None)
    def notify(self, ctx: StepContext, data: LocalData) -> None:
        _effect(ctx, "notify")


class SlowFirst(Saga[LocalData]):
    """A local step whose first attempt outlives its timeout; the retry is quick."""

    type_name = "test.local-slow-first"

    @step(
        local=True,
        uses_db=False,
        compensate=None,
        timeout=timedelta(milliseconds=1500),
        retry=Retry(max_attempts=3, initial=timedelta(milliseconds=100)),
    )
    def slow(self, ctx: StepContext, data: LocalData) -> None:
        record_call(ctx, f"slow#{ctx.attempt}")
        if ctx.attempt == 1:
            time.sleep(4.0)


class Hang(Saga[LocalData]):
    """A local step that never returns: its one attempt times out and the saga fails."""

    type_name = "test.local-hang"

    @step(
        local=True,
        uses_db=False,
        compensate=None,
        timeout=timedelta(seconds=1),
        retry=Retry(max_attempts=1),
        on_failure="fail",
    )
    def stuck(self, ctx: StepContext, data: LocalData) -> None:
        record_call(ctx, "stuck")
        time.sleep(3600)


class KillOnce(Saga[LocalData]):
    """A local step without a database that SIGKILLs its process the first time it runs."""

    type_name = "test.local-kill-once"

    @step(local=True, uses_db=False, compensate=None)
    def fragile(self, ctx: StepContext, data: LocalData) -> None:
        record_call(ctx, "fragile")
        marker = Path(os.environ.get("SAGALINE_TEST_CALLS", "calls") + ".killed")
        if not marker.exists():
            marker.write_text("killed once\n", encoding="utf-8")
            os.kill(os.getpid(), signal.SIGKILL)


REGISTRY = SagaRegistry([LocalChain, Mixed, LocalDb, SlowFirst, Hang, KillOnce])


def registry() -> SagaRegistry:
    """The ``--app`` of the subprocess orchestrators."""
    return REGISTRY
