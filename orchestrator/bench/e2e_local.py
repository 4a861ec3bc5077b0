"""Where a local step's CPU goes: the real decider and ``LocalStepRunner`` in one process.

No Kafka, no database: ``sagas`` five-step ``Local5`` sagas are decided input by input
(``CoreLogic``: decide + journal entry), their local tasks run through the runner the
orchestrator uses (``run_tasks``: thread hand-off, handler, context, reply record), and the
journal entries, outgoing records and snapshots are Avro-encoded, as the engine does in a
batch.  Process CPU (``time.process_time``) per saga and per step, split by phase.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sagaline.consumers.local_steps import LocalStepRunner
from sagaline.orchestrator.bench.e2e_sagas import E2E_REGISTRY, E2EFive, Local5
from sagaline.orchestrator.core.payloads import input_sha256, to_payload
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.schemas.base import Envelope, Record
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.tasks import ExecuteStep

__all__ = ["local_cpu"]

_STEPS = 5


def _start(i: int) -> StartSaga:
    envelope = Envelope(
        message_id=f"cpu-{i}",
        saga_id=f"cpu-{i}",
        saga_type=Local5.type_name,
        saga_version=Local5.version,
        occurred_at=datetime.now(UTC),
    )
    data = to_payload(E2EFive())
    return StartSaga(envelope=envelope, data=data, input_sha256=input_sha256(data))


class _Phases:
    def __init__(self) -> None:
        self.logic = CoreLogic(E2E_REGISTRY)
        self.codec = AvroCodec()
        self.runner = LocalStepRunner(E2E_REGISTRY, pool=None, replies_topic="bench.replies")
        self.seconds = {"decide_and_journal": 0.0, "run": 0.0, "encode": 0.0}

    def _decide(self, state: Record | None, record: Record) -> tuple[Record, list[ExecuteStep]]:
        t0 = time.process_time()
        out = self.logic.decide(state, record)
        t1 = time.process_time()
        for entry in out.journal:
            self.codec.encode(entry)
        tasks = []
        for o in out.outgoing:
            self.codec.encode(o.record)
            if isinstance(o.record, ExecuteStep):
                tasks.append(o.record)
        self.seconds["decide_and_journal"] += t1 - t0
        self.seconds["encode"] += time.process_time() - t1
        return out.state, tasks

    def saga(self, i: int) -> None:
        state, tasks = self._decide(None, _start(i))
        while tasks:
            t0 = time.process_time()
            replies = self.runner.run_tasks(tasks, 10.0)
            self.seconds["run"] += time.process_time() - t0
            tasks = []
            for reply in replies:
                if reply is None:
                    raise RuntimeError(f"a local step of saga cpu-{i} never started")
                state, more = self._decide(state, reply)
                tasks.extend(more)
            t1 = time.process_time()
            self.codec.encode(state)  # the batch's snapshot
            self.seconds["encode"] += time.process_time() - t1
        if not self.logic.is_terminal(state):
            raise RuntimeError(f"saga cpu-{i} did not finish")


def local_cpu(sagas: int = 300) -> dict[str, Any]:
    """CPU per five-step local saga and per local step, by phase (milliseconds)."""
    phases = _Phases()
    try:
        for i in range(20):  # warm-up (caches, first encodes)
            phases.saga(-1 - i)
        phases.seconds = dict.fromkeys(phases.seconds, 0.0)
        t0 = time.process_time()
        for i in range(sagas):
            phases.saga(i)
        total = time.process_time() - t0
    finally:
        phases.runner.close()
    per_saga = {k: round(1000 * v / sagas, 3) for k, v in phases.seconds.items()}
    return {
        "sagas": sagas,
        "cpu_ms_per_saga": {**per_saga, "total": round(1000 * total / sagas, 3)},
        "cpu_ms_per_local_step": round(1000 * total / sagas / _STEPS, 3),
    }
