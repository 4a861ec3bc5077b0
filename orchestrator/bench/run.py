"""The orchestrator benchmark: latency, throughput and recovery on real Kafka.

Processes: one orchestrator (``sagaline orchestrator run``) and one
responder (``sagaline bench responder``) as subprocesses; this process
starts sagas with :class:`~sagaline.orchestrator.client.SagaClient` and tails the
state topic (read_committed) to see each saga's snapshots as they commit.

* **sequential**: one saga at a time; latency = start sent → terminal
  snapshot visible; per-step = latency / 5; per-step overhead subtracts the
  simulated step time.
* **throughput**: N sagas sent at once; sagas/s and steps/s until the last
  one is terminal.
* **recovery**: N sagas in flight, SIGKILL the orchestrator, restart it at
  once; time from the restart until every saga that was in flight at the
  kill has committed a new snapshot.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, TopicPartition

from sagaline.orchestrator.bench.sagas import BenchData, NoOp5
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.orchestrator.runtime.snapshots import TERMINAL_HEADER
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics, partition_count

__all__ = ["BenchOptions", "StateTail", "run_bench"]

STEPS = 5


@dataclass(frozen=True)
class BenchOptions:
    """What to run."""

    bootstrap: str
    partitions: int = 4
    sequential: int = 100
    throughput: int = 1000
    recovery: int = 1000
    sleep_ms: float = 5.0
    warmup: int = 20
    max_batch: int = 500
    fetch_wait_max_ms: int = 5
    keep_topics: bool = False


class StateTail:
    """Tails every partition of the state topic; records when each saga's snapshots commit."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topics.state
        parts = partition_count(settings.kafka_bootstrap_servers, self.topic)
        self.consumer = Consumer(
            reader_config(
                settings.kafka_bootstrap_servers,
                f"bench-tail-{uuid.uuid4().hex}",
                extra={"enable.partition.eof": False, "fetch.wait.max.ms": 2},
            )
        )
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_END) for p in range(parts)])
        self.lock = threading.Condition()
        self.terminal: dict[str, float] = {}
        self.snapshots: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.consumer.poll(0.05)
            if msg is None:
                continue
            batch = [msg, *self.consumer.consume(1000, 0)]
            now = time.perf_counter()
            with self.lock:
                for m in batch:
                    err = m.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            raise RuntimeError(str(err))
                        continue
                    key, value = m.key(), m.value()
                    if key is None or value is None:
                        continue
                    saga_id = key.decode()
                    self.snapshots.setdefault(saga_id, []).append(now)
                    if (TERMINAL_HEADER, b"true") in (m.headers() or []):
                        self.terminal[saga_id] = now
                self.lock.notify_all()

    def wait_terminal(self, ids: Sequence[str], timeout: float) -> float:
        """Block until all ``ids`` are terminal; return when the last one became so."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not all(i in self.terminal for i in ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [i for i in ids if i not in self.terminal]
                    raise TimeoutError(f"{len(missing)} sagas not terminal after {timeout}s")
                self.lock.wait(min(left, 0.5))
            return max(self.terminal[i] for i in ids)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


class Proc:
    """A benchmark subprocess with its log file."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *self.args, *extra], stdout=out, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _pct(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "mean": round(statistics.fmean(ordered), 3),
    }


class Bench:
    """One benchmark run over fresh topics."""

    def __init__(self, options: BenchOptions, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.settings = Settings(
            kafka_bootstrap_servers=options.bootstrap, topics=TopicNames(self.prefix)
        )
        ensure_topics(options.bootstrap, self.settings.topics, TopicLayout(options.partitions))
        self.client = SagaClient(self.settings, client_id="bench")
        self.tail = StateTail(self.settings)
        self.orchestrator = Proc(
            [
                "sagaline.orchestrator.cli",
                "orchestrator",
                "run",
                "--app",
                "sagaline.orchestrator.bench.sagas:registry",
                "--instance-id",
                "bench",
                "--group",
                f"{self.prefix}-orch",
                "--bootstrap",
                options.bootstrap,
                "--prefix",
                self.prefix,
                "--max-batch",
                str(options.max_batch),
                "--fetch-wait-max-ms",
                str(options.fetch_wait_max_ms),
                "--log-level",
                "WARNING",
            ],
            workdir / "orchestrator.log",
        )
        self.responder: Proc | None = None
        self._n = 0
        self._phase = 0

    def start_responder(self, sleep_ms: float) -> None:
        if self.responder is not None:
            self.responder.stop()
        self.responder = Proc(
            [
                "sagaline.orchestrator.cli",
                "bench",
                "responder",
                "--bootstrap",
                self.options.bootstrap,
                "--prefix",
                self.prefix,
                "--sleep-ms",
                str(sleep_ms),
                "--fetch-wait-max-ms",
                str(self.options.fetch_wait_max_ms),
            ],
            self.workdir / "responder.log",
        )
        self.responder.start()

    def ids(self, tag: str, n: int) -> list[str]:
        self._n += 1
        return [f"{tag}-{self._n}-{i}" for i in range(n)]

    def send(self, ids: Sequence[str], *, flush: bool) -> None:
        for saga_id in ids:
            self.client.start(
                NoOp5, BenchData(n=0), saga_id=saga_id, check_existing=False, flush=flush
            )
        self.client.close()

    @contextmanager
    def measured_orchestrator(self, into: dict[str, Any]) -> Iterator[None]:
        """Run one orchestrator incarnation for a phase; add its own time per decision."""
        self._phase += 1
        stats_file = self.workdir / f"stats-{self._phase}.json"
        self.orchestrator.start("--stats-file", str(stats_file))
        try:
            # not measured: the incarnation's start, group join and restore
            warm = self.ids("ready", 1)
            self.send(warm, flush=True)
            self.tail.wait_terminal(warm, 60)
            yield
        finally:
            self.orchestrator.stop()
        if stats_file.exists():
            stats = json.loads(stats_file.read_text())
            decisions = max(1, stats["decisions"])
            into["orchestrator"] = {
                "batches": stats["batches"],
                "decisions": stats["decisions"],
                "decisions_per_batch": round(stats["decisions"] / max(1, stats["batches"]), 1),
                "decide_ms_per_decision": round(1000 * stats["decide_seconds"] / decisions, 3),
                "commit_ms_per_batch": round(
                    1000 * stats["commit_seconds"] / max(1, stats["batches"]), 3
                ),
            }

    def sequential(self, n: int, sleep_ms: float) -> dict[str, Any]:
        latencies: list[float] = []
        for saga_id in self.ids("seq", n):
            t0 = time.perf_counter()
            self.send([saga_id], flush=True)
            done = self.tail.wait_terminal([saga_id], 60)
            latencies.append((done - t0) * 1000)
        per_step = [lat / STEPS for lat in latencies]
        overhead = [(lat - STEPS * sleep_ms) / STEPS for lat in latencies]
        return {
            "sagas": n,
            "saga_latency_ms": _pct(latencies),
            "per_step_ms": _pct(per_step),
            "per_step_overhead_ms": _pct(overhead),
        }

    def throughput(self, n: int) -> dict[str, Any]:
        ids = self.ids("tput", n)
        t0 = time.perf_counter()
        self.send(ids, flush=False)
        done = self.tail.wait_terminal(ids, 120)
        seconds = done - t0
        return {
            "sagas": n,
            "seconds": round(seconds, 3),
            "sagas_per_s": round(n / seconds, 1),
            "steps_per_s": round(n * STEPS / seconds, 1),
        }

    def recovery(self, n: int) -> dict[str, Any]:
        ids = self.ids("rec", n)
        self.send(ids, flush=False)
        # let the load get going, then kill in the middle of it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self.tail.lock:
                finished = sum(1 for i in ids if i in self.tail.terminal)
            if finished >= n // 4:
                break
            time.sleep(0.01)
        self.orchestrator.kill()
        killed = time.perf_counter()
        with self.tail.lock:
            in_flight = [i for i in ids if i not in self.tail.terminal]
        self.orchestrator.start("--stats-file", str(self.workdir / "stats-recovery.json"))
        restarted = time.perf_counter()
        all_done = self.tail.wait_terminal(ids, 120)
        with self.tail.lock:
            firsts = [
                min((t for t in self.tail.snapshots.get(i, []) if t > restarted), default=all_done)
                for i in in_flight
            ]
        return {
            "sagas": n,
            "in_flight_at_kill": len(in_flight),
            "kill_to_restart_s": round(restarted - killed, 3),
            "restart_to_first_progress_s": round(min(firsts) - restarted, 3) if firsts else 0.0,
            "restart_to_all_in_flight_moving_s": round(max(firsts) - restarted, 3)
            if firsts
            else 0.0,
            "restart_to_all_terminal_s": round(all_done - restarted, 3),
        }

    def run(self) -> dict[str, Any]:
        opts = self.options
        result: dict[str, Any] = {
            "benchmark": "sagaline orchestrator",
            "cpus": os.cpu_count(),
            "partitions": opts.partitions,
            "steps_per_saga": STEPS,
            "max_batch": opts.max_batch,
            "fetch_wait_max_ms": opts.fetch_wait_max_ms,
        }
        try:
            self.start_responder(0.0)
            warm = self.ids("warm", opts.warmup)
            with self.measured_orchestrator({}):
                self.send(warm, flush=False)
                self.tail.wait_terminal(warm, 60)
            for name, sleep_ms in (("noop", 0.0), (f"sleep_{opts.sleep_ms:g}ms", opts.sleep_ms)):
                self.start_responder(sleep_ms)
                seq: dict[str, Any] = {}
                with self.measured_orchestrator(seq):
                    seq.update(self.sequential(opts.sequential, sleep_ms))
                # orchestrator's own share of a step: 6 decisions per 5-step saga
                own = seq["orchestrator"]
                seq["orchestrator_ms_per_step"] = round(
                    (own["decide_ms_per_decision"] + own["commit_ms_per_batch"]) * 6 / STEPS, 3
                )
                tput: dict[str, Any] = {}
                with self.measured_orchestrator(tput):
                    tput.update(self.throughput(opts.throughput))
                result[name] = {"sequential": seq, "throughput": tput}
            self.start_responder(0.0)
            if opts.recovery:
                with self.measured_orchestrator({}):
                    result["recovery"] = self.recovery(opts.recovery)
        finally:
            self.orchestrator.stop()
            if self.responder is not None:
                self.responder.stop()
            self.tail.close()
            if not opts.keep_topics:
                _delete_topics(opts.bootstrap, self.prefix)
        return result


def _delete_topics(bootstrap: str, prefix: str) -> None:
    from confluent_kafka.admin import AdminClient

    from sagaline.orchestrator.runtime.kafka_config import admin_config

    admin = AdminClient(admin_config(bootstrap))
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{prefix}.")]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(30)


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the benchmark and return the JSON-able result."""
    with tempfile.TemporaryDirectory(prefix="sagaline-bench-") as tmp:
        return Bench(options, Path(tmp)).run()
