"""``sagaline bench e2e``: five-step sagas through real orchestrator, worker and relay.

Everything runs as the user runs it (:class:`~sagaline.orchestrator.bench.e2e_stack.Stack`:
``sagaline orchestrator run``, ``worker run``, ``relay run`` subprocesses on
the configured Kafka and PostgreSQL).  Per delivery path (``kafka``: the
worker's Kafka transaction; ``outbox``: PostgreSQL outbox and relay):

* **sequential**: one saga at a time (steps do nothing): saga latency p50/p99,
  per-step overhead (latency / 5; goal 1), CPU per saga of every process,
  broker and PostgreSQL included (``/proc/<pid>/stat``), and the hop-by-hop
  breakdown of the middle steps: task visible → reply produced (worker: fetch,
  run, PostgreSQL commit; on the outbox path also the relay's pick-up) →
  reply visible (the reply's transaction commit, or the relay's flush) → next
  task visible (orchestrator: fetch, decide, transaction commit).  "Visible"
  is when a read_committed reader in this process received the record, so each
  hop includes one fetch of that reader (about a millisecond).
* **throughput**: ``--throughput`` sagas started at once; steps/s until the last
  is terminal (goal 3), and CPU per saga under load.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sagaline.orchestrator.bench.e2e_sagas import (
    E2EFive,
    Kafka5,
    Local1,
    Local5,
    LocalDb1,
    LocalDb5,
    Outbox5,
)
from sagaline.orchestrator.bench.e2e_stack import Seen, Stack
from sagaline.orchestrator.bench.workers_support import summary
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.client.watch import SnapshotWatch
from sagaline.orchestrator.core.saga import Saga

__all__ = ["PATHS", "goal", "run_e2e"]

STEPS = 5
PATHS: dict[str, type[Saga[E2EFive]]] = {
    "kafka": Kafka5,
    "outbox": Outbox5,
    "local": Local5,
    "local_db": LocalDb5,
}
#: one-step sagas of the local paths: (latency of 5 - latency of 1) / 4 = one more step
ONE_STEP: dict[str, type[Saga[E2EFive]]] = {"local": Local1, "local_db": LocalDb1}
_HOPS = (
    "start_sent_to_first_task_visible",
    "task_visible_to_reply_produced",
    "reply_produced_to_reply_visible",
    "reply_visible_to_next_task_visible",
    "step_round_trip",
    "last_reply_visible_to_terminal",
)


def _hops(seen: Seen, sent: float, into: dict[str, list[float]]) -> None:
    if len(seen.tasks) < STEPS or len(seen.replies) < STEPS or seen.terminal is None:
        return
    into["start_sent_to_first_task_visible"].append(seen.tasks[0][0] - sent)
    for k in range(1, STEPS - 1):
        task_visible = seen.tasks[k][0]
        reply_visible, reply_created = seen.replies[k]
        into["task_visible_to_reply_produced"].append(reply_created - task_visible)
        into["reply_produced_to_reply_visible"].append(reply_visible - reply_created)
        into["reply_visible_to_next_task_visible"].append(seen.tasks[k + 1][0] - reply_visible)
        into["step_round_trip"].append(seen.tasks[k + 1][0] - task_visible)
    into["last_reply_visible_to_terminal"].append(seen.terminal - seen.replies[-1][0])


def _ms(values: Sequence[float]) -> dict[str, float]:
    return summary(values)


class _Run:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.client = SagaClient(stack.settings, client_id="bench-e2e")
        self.meter = stack.meter()

    def ids(self, tag: str, n: int) -> list[str]:
        run = uuid.uuid4().hex[:6]
        return [f"{tag}-{run}-{i}" for i in range(n)]

    def warm(self, n: int) -> None:
        """Run ``n`` sagas of every path at once before measuring: the broker's
        JIT compiler, the connection pools and the processes' caches reach their steady
        state (a user's long-running stack), which a handful of sagas does not give."""
        for kind in PATHS.values():
            ids = self.ids(f"warm-{kind.type_name}", n)
            for saga_id in ids:
                self.client.start(
                    kind, E2EFive(), saga_id=saga_id, check_existing=False, flush=False
                )
            self.client.flush()
            self.stack.tail.wait_terminal(ids, 300)

    def sequential(self, kind: type[Saga[E2EFive]], n: int) -> dict[str, Any]:
        latencies: list[float] = []
        hops: dict[str, list[float]] = {name: [] for name in _HOPS}
        self.meter.mark()
        for saga_id in self.ids(f"seq-{kind.type_name}", n):
            sent = time.time()
            self.client.start(kind, E2EFive(), saga_id=saga_id, check_existing=False)
            done = self.stack.tail.wait_terminal([saga_id], 60)
            latencies.append(done - sent)
            with self.stack.tail.lock:
                _hops(self.stack.tail.seen[saga_id], sent, hops)
        cpu = self.meter.since(n)
        return {
            "sagas": n,
            "saga_latency": _ms(latencies),
            "per_step_overhead": _ms([lat / STEPS for lat in latencies]),
            "one_step_hops": {name: _ms(values) for name, values in hops.items()},
            "cpu_ms_per_saga": cpu,
        }

    def throughput(self, kind: type[Saga[E2EFive]], n: int) -> dict[str, Any]:
        ids = self.ids(f"tput-{kind.type_name}", n)
        self.meter.mark()
        t0 = time.time()
        for saga_id in ids:
            self.client.start(kind, E2EFive(), saga_id=saga_id, check_existing=False, flush=False)
        self.client.flush()
        done = self.stack.tail.wait_terminal(ids, 600)
        seconds = done - t0
        return {
            "sagas": n,
            "seconds": round(seconds, 3),
            "sagas_per_s": round(n / seconds, 1),
            "steps_per_s": round(n * STEPS / seconds, 1),
            "cpu_ms_per_saga": self.meter.since(n),
        }


def marginal_step(run: _Run, path: str, five: dict[str, Any], n: int) -> dict[str, Any]:
    """A local path's one-step saga, and (p50 of 5 steps - p50 of 1 step) / 4."""
    one = run.sequential(ONE_STEP[path], n)
    p50_five, p50_one = five["saga_latency"].get("p50_ms"), one["saga_latency"].get("p50_ms")
    per_step = None
    if p50_five is not None and p50_one is not None:
        per_step = round((p50_five - p50_one) / (STEPS - 1), 3)
    return {"one_step_saga_latency": one["saga_latency"], "p50_ms_per_further_step": per_step}


def goal(measured: float | None, target: float, *, at_least: bool = False) -> dict[str, Any]:
    """One goal's line of the report: the figure, the target and whether it is met."""
    met = measured is not None and (measured >= target if at_least else measured <= target)
    return {"measured": measured, "target": target, "met": met}


def waiting(run: _Run, kind: type[Saga[E2EFive]], n: int, many: int) -> dict[str, Any]:
    """Goal 7: ``SagaHandle.wait()`` against the terminal snapshot's visibility, and
    one client waiting on ``many`` sagas (one shared reader: the client's watch)."""
    late: list[float] = []
    for i, saga_id in enumerate(run.ids("wait", n + 1)):
        handle = run.client.start(kind, E2EFive(), saga_id=saga_id, check_existing=False)
        handle.wait(60)
        returned = time.time()
        visible = run.stack.tail.wait_terminal([saga_id], 10)
        if i > 0:  # the first wait starts the client's reader
            late.append(returned - visible)  # signed: < 0 if wait() beat the bench's reader
    created_before = SnapshotWatch.consumers_created
    waiter = SagaClient(run.stack.settings, client_id="bench-e2e-waiter")
    try:
        ids = run.ids("wait-many", many)
        t0 = time.time()
        handles = [
            waiter.start(kind, E2EFive(), saga_id=i, check_existing=False, flush=False) for i in ids
        ]
        waiter.flush()
        for handle in handles:
            handle.wait(300)
        seconds = time.time() - t0
        last_visible = run.stack.tail.wait_terminal(ids, 10) - t0
        # the snapshot consumers the waiting client really created for its N waits
        readers = SnapshotWatch.consumers_created - created_before
    finally:
        waiter.close()
    return {
        "wait_return_after_terminal_visible": _ms(late),
        "wait_returned_before_bench_saw_terminal_share": (
            round(sum(1 for d in late if d < 0) / len(late), 3) if late else None
        ),
        "many": {
            "sagas": many,
            "readers": readers,
            "seconds_all_waits_returned": round(seconds, 3),
            "seconds_last_terminal_visible": round(last_visible, 3),
        },
    }


def _goals(report: dict[str, Any]) -> dict[str, Any]:
    goals: dict[str, Any] = {}
    limits = {
        "kafka": (3.0, 2000.0),
        "outbox": (4.0, 1000.0),
        "local": (1.0, 5000.0),
        "local_db": (1.0, 5000.0),
    }
    for path, (overhead_ms, steps_per_s) in limits.items():
        part = report.get(path)
        if not part:
            continue
        seq = part["sequential"]
        p50 = seq["per_step_overhead"].get("p50_ms")
        goals[f"goal1_{path}_per_step_overhead_p50_ms"] = goal(p50, overhead_ms)
        goals[f"goal1_{path}_saga_p99_ms"] = goal(seq["saga_latency"].get("p99_ms"), 30.0)
        tput = part.get("throughput", {}).get("steps_per_s")
        goals[f"goal3_{path}_steps_per_s"] = goal(tput, steps_per_s, at_least=True)
        if "marginal_step" in part:
            further = part["marginal_step"]["p50_ms_per_further_step"]
            goals[f"goal2_{path}_p50_ms_per_further_step"] = goal(further, overhead_ms)
    if "waiting" in report:
        late = report["waiting"]["wait_return_after_terminal_visible"].get("p50_ms")
        goals["goal7_wait_after_commit_p50_ms"] = goal(late, 2.0)
        goals["goal7_readers_for_1000_waits"] = goal(report["waiting"]["many"]["readers"], 1)
    return goals


def run_e2e(
    *,
    bootstrap: str,
    dsn: str,
    sagas: int,
    throughput: int,
    partitions: int = 4,
    concurrency: int = 64,
    paths: Sequence[str] = ("kafka", "outbox"),
    wait_sagas: int = 50,
    wait_many: int = 1000,
    warm: int = 300,
) -> dict[str, Any]:
    """Run the end-to-end benchmark; returns the JSON-able report."""
    stack = Stack(bootstrap, dsn, partitions=partitions, concurrency=concurrency)
    report: dict[str, Any] = {
        "benchmark": "sagaline e2e (real orchestrator, worker and relay processes)",
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "partitions": partitions,
        "worker_concurrency": concurrency,
        "steps_per_saga": STEPS,
    }
    if any(path in ONE_STEP for path in paths):
        from sagaline.orchestrator.bench.e2e_local import local_cpu

        report["local_cpu_in_process"] = local_cpu()
    try:
        stack.start()
        run = _Run(stack)
        run.warm(max(1, warm))
        report["warm_sagas_per_path"] = max(1, warm)
        if wait_sagas > 0:
            report["waiting"] = waiting(run, Kafka5, wait_sagas, wait_many)
        for path in paths:
            kind = PATHS[path]
            part: dict[str, Any] = {"sequential": run.sequential(kind, sagas)}
            if path in ONE_STEP:
                part["marginal_step"] = marginal_step(run, path, part["sequential"], sagas)
            if throughput > 0:
                part["throughput"] = run.throughput(kind, throughput)
            report[path] = part
        run.client.close()
    finally:
        stats = stack.close()
    if stats:
        batches = max(1, stats["batches"])
        report["orchestrator_engine"] = {
            "batches": stats["batches"],
            "decisions": stats["decisions"],
            "decide_ms_per_batch": round(1000 * stats["decide_seconds"] / batches, 3),
            "commit_ms_per_batch": round(1000 * stats["commit_seconds"] / batches, 3),
        }
    report["goals"] = _goals(report)
    return report
