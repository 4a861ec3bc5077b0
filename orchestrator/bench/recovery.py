"""``sagaline bench recovery``: SIGKILL a worker, the orchestrator or the relay mid-run.

Each scenario runs on a fresh :class:`~sagaline.orchestrator.bench.e2e_stack.Stack`
(real ``orchestrator run``, ``worker run --instance-id``, ``relay run``
processes), starts ``--sagas`` five-step sagas at once, SIGKILLs one process
while they are in flight and starts its replacement at once (same command,
so the same instance id: the worker and orchestrator rejoin as static group
members and fence their predecessor's transaction).  Reported, from the
replacement's start (goal 6: within 1 s):

* ``restart_to_first_progress_s``: the first record the replacement's work
  made visible (a reply for the worker and the relay, a snapshot for the
  orchestrator);
* ``restart_to_all_in_flight_moving_s``: until every saga in flight at the
  kill moved again, minus the work it still had to do (a step 3 that was
  running when the worker died runs again for ``--sleep-s``): the time
  recovery itself cost;
* ``restart_to_all_terminal_s``;
* ``replacement_cpu_s_to_first_progress`` / ``..._to_all_in_flight_moving``: the
  replacement process's own CPU time (user + system, from ``/proc``) until then,
  the load-robust figure: on a loaded machine the wall-clock times above are this
  CPU stretched by the wait for a core (the replacement logs where its start went:
  ``startup ...`` lines at INFO, :mod:`~sagaline.orchestrator.runtime.startup_clock`).

``worker``: step 3 sleeps ``--sleep-s`` (2 s, as in issue 11) on the outbox path
and the kill lands while the sagas sleep there.  ``orchestrator``: Kafka path,
no sleep, killed while the sagas are mid-way.  ``relay``: outbox path, no sleep.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sagaline.orchestrator.bench.e2e import goal
from sagaline.orchestrator.bench.e2e_sagas import E2EFive, Kafka5, Outbox5
from sagaline.orchestrator.bench.e2e_stack import Seen, Stack
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.core.saga import Saga

__all__ = ["SCENARIOS", "run_recovery"]


@dataclass(frozen=True)
class _Scenario:
    victim: str
    kind: type[Saga[E2EFive]]
    sleep_s: float
    #: kill once this many tasks of a saga are visible (3: sleeping in step 3)
    kill_at_tasks: int
    #: what shows the replacement's progress
    progress: str


SCENARIOS = {
    "worker": _Scenario("worker", Outbox5, 2.0, 3, "replies"),
    "orchestrator": _Scenario("orchestrator", Kafka5, 0.0, 2, "states"),
    "relay": _Scenario("relay", Outbox5, 0.0, 2, "replies"),
}


def _times(seen: Seen, progress: str) -> list[float]:
    if progress == "states":
        return list(seen.states)
    return [visible for visible, _created in seen.replies]


class _CpuTrace:
    """Samples a process's CPU time (user + system) every 10 ms until stopped."""

    def __init__(self, pid: int) -> None:
        self._path = f"/proc/{pid}/stat"
        self._tick = os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[float, float]] = []  # (wall time, cpu seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with open(self._path, encoding="ascii") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                return
            self.samples.append((time.time(), (int(fields[11]) + int(fields[12])) / self._tick))
            self._stop.wait(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cpu_at(self, when: float) -> float | None:
        """The CPU seconds of the last sample taken at or before ``when``."""
        before = [cpu for at, cpu in self.samples if at <= when]
        return round(before[-1], 3) if before else None


def _work_before_progress(
    scenario: _Scenario, replies_at_kill: dict[str, list[float]], saga_id: str
) -> float:
    """The step time between the restart and a saga's first progress: work, not recovery.

    A saga whose next reply is step 3's (two replies at the kill) shows progress
    only once step 3 has run in full after the restart, ``sleep_s``: whether its
    task was running in the killed worker (run again), not yet consumed, or not
    yet written when the kill landed.  (Counting only the sagas with a third task
    visible at the kill, as before, charged the sleep of the others to recovery.)
    """
    return scenario.sleep_s if len(replies_at_kill.get(saga_id, ())) == 2 else 0.0


def _delay(
    since_restart: float,
    scenario: _Scenario,
    replies_at_kill: dict[str, list[float]],
    saga_id: str,
) -> float:
    """What recovery cost a saga: its first progress after the restart, less the step
    work it had to do again.  Progress sooner than that work (a step 3 the killed
    worker had finished, its reply not yet visible at the kill) ran nothing again:
    all of its wait counts, never below zero (a negative time used to be reported)."""
    work = _work_before_progress(scenario, replies_at_kill, saga_id)
    if since_restart >= work:
        return since_restart - work
    return max(0.0, since_restart)


def _wait_for(stack: Stack, ids: list[str], tasks: int, share: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stack.tail.lock:
            reached = sum(1 for i in ids if len(stack.tail.seen.get(i, Seen()).tasks) >= tasks)
        if reached >= share * len(ids):
            return
        time.sleep(0.005)


def _scenario(stack: Stack, scenario: _Scenario, n: int) -> dict[str, Any]:
    client = SagaClient(stack.settings, client_id="bench-recovery")
    data = E2EFive(sleep_s=scenario.sleep_s)
    ids = [f"rec-{scenario.victim}-{uuid.uuid4().hex[:6]}-{i}" for i in range(n)]
    for saga_id in ids:
        client.start(scenario.kind, data, saga_id=saga_id, check_existing=False, flush=False)
    client.close()
    _wait_for(stack, ids, scenario.kill_at_tasks, 0.9 if scenario.sleep_s else 0.3, 120)
    victim = stack.procs[scenario.victim]
    victim.kill()
    killed = time.time()
    with stack.tail.lock:
        in_flight = {
            i: len(stack.tail.seen[i].replies)
            for i in ids
            if i in stack.tail.seen and stack.tail.seen[i].terminal is None
        }
        replies_at_kill = {
            i: [t for t, _created in stack.tail.seen[i].replies if t <= killed] for i in in_flight
        }
    victim.start()
    restarted = time.time()
    trace = _CpuTrace(stack.pid(scenario.victim) or 0)
    try:
        done = stack.tail.wait_terminal(ids, 300)
    finally:
        trace.stop()
    delays: list[float] = []
    moving: list[float] = []  # when each saga moved again (wall time)
    with stack.tail.lock:
        for saga_id in in_flight:
            after = [t for t in _times(stack.tail.seen[saga_id], scenario.progress) if t > killed]
            first = min(after, default=done)
            delays.append(_delay(first - restarted, scenario, replies_at_kill, saga_id))
            moving.append(first)
    return {
        "sagas": n,
        "in_flight_at_kill": len(in_flight),
        "step3_sleep_s": scenario.sleep_s,
        "kill_to_restart_s": round(restarted - killed, 3),
        "restart_to_first_progress_s": round(min(delays), 3) if delays else None,
        "restart_to_all_in_flight_moving_s": round(max(delays), 3) if delays else None,
        "restart_to_all_terminal_s": round(done - restarted, 3),
        "replacement_cpu_s_to_first_progress": trace.cpu_at(min(moving)) if moving else None,
        "replacement_cpu_s_to_all_in_flight_moving": trace.cpu_at(max(moving)) if moving else None,
    }


def run_recovery(
    *,
    bootstrap: str,
    dsn: str,
    sagas: int,
    victims: list[str],
    partitions: int = 4,
    concurrency: int = 256,
) -> dict[str, Any]:
    """Run the kill scenarios of ``victims``; returns the JSON-able report."""
    report: dict[str, Any] = {
        "benchmark": "sagaline recovery (SIGKILL of real processes, replacement started at once)",
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "partitions": partitions,
        "worker_concurrency": concurrency,
    }
    goals: dict[str, Any] = {}
    for victim in victims:
        stack = Stack(bootstrap, dsn, partitions=partitions, concurrency=concurrency)
        try:
            stack.start()
            warm = SagaClient(stack.settings, client_id="bench-recovery-warm")
            ids = [f"warm-{uuid.uuid4().hex[:6]}-{k.type_name}" for k in (Kafka5, Outbox5)]
            for saga_id, kind in zip(ids, (Kafka5, Outbox5), strict=True):
                warm.start(kind, E2EFive(), saga_id=saga_id, check_existing=False)
            warm.close()
            stack.tail.wait_terminal(ids, 120)
            result = _scenario(stack, SCENARIOS[victim], sagas)
        finally:
            stack.close()
        report[victim] = result
        goals[f"goal6_{victim}_restart_to_all_in_flight_moving_s"] = goal(
            result["restart_to_all_in_flight_moving_s"], 1.0
        )
    report["goals"] = goals
    return report
