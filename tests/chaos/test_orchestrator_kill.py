"""SIGKILL orchestrator processes under load; nothing may be lost or done twice.

The orchestrators are real subprocesses (``sagaline orchestrator run``)
running the real decider over real saga definitions; a transactional
responder answers tasks.  Afterwards every invariant is checked against the
committed contents of the topics (see ``check_saga_invariants``).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
sys.path.insert(0, str(INTEGRATION))

from orchestrator_process import OrchestratorProcess  # noqa: E402
from orchestrator_sagas import PipeData, Pipeline  # noqa: E402
from orchestrator_support import (  # noqa: E402
    Responder,
    check_saga_invariants,
    delete_prefix_topics,
    latest_snapshots,
    wait_all_terminal,
)

from sagaline.orchestrator.client import SagaClient  # noqa: E402
from sagaline.orchestrator.config import Settings, TopicNames  # noqa: E402
from sagaline.orchestrator.runtime.core import AvroCodec  # noqa: E402
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics  # noqa: E402

pytestmark = pytest.mark.chaos

APP = "orchestrator_sagas:registry"


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-chaos")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=4))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


def assert_in_flight(
    bootstrap: str, prefix: str, codec: AvroCodec, ids: list[str], what: str
) -> None:
    """Some sagas had started and not finished when the kill landed (committed state read
    after the kill: a started, non-terminal saga was in flight at that moment)."""
    states = latest_snapshots(bootstrap, prefix, codec)
    in_flight = [i for i in ids if i in states and not states[i].is_terminal]
    assert in_flight, f"{what} landed with no saga in flight"


def wait_in_flight(
    bootstrap: str, prefix: str, codec: AvroCodec, ids: list[str], timeout: float = 60.0
) -> None:
    """Block until the committed state shows a saga of ``ids`` started and not finished.

    With ``ids`` that only the running incarnation can have started (the sagas sent
    while it was down, or before its first start), this means that incarnation is past
    its restore and committing batches.  That can take longer than any fixed sleep: a
    loaded machine, and the first fetch after an assignment can sit out one long poll
    (``fetch.wait.max.ms``) when it went out before all the partitions were fetchable."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = latest_snapshots(bootstrap, prefix, codec)
        if any(i in states and not states[i].is_terminal for i in ids):
            return
        time.sleep(0.1)
    raise AssertionError("no saga was ever in flight")


def _start_sagas(client: SagaClient, ids: list[str]) -> None:
    for saga_id in ids:
        client.start(
            Pipeline, PipeData(label=saga_id), saga_id=saga_id, check_existing=False, flush=False
        )
    client.close()


def test_sigkill_and_restart_three_times(settings: Settings, tmp_path: Path) -> None:
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "0")) or None)
    ids = [f"kill-{i}" for i in range(150)]
    # each task "runs" 400 ms: a 5-step saga is in flight for 2 s or more, so every
    # kill (0.1-1.0 s after a committed batch shows sagas in flight) lands mid-flight
    # (checked again after the kill)
    responder = Responder(bootstrap, prefix, codec, sleep_ms=400).start()
    orch = OrchestratorProcess(settings, APP, tmp_path, "solo")
    try:
        orch.start()
        with SagaClient(settings) as client:
            _start_sagas(client, ids)
            fresh = ids  # started by this incarnation only: not in the state before it ran
            for _ in range(3):
                orch.wait_assigned()
                started = ids + [f"{i}-late{n}" for n in range(1, orch.starts) for i in ids[:10]]
                # not merely "some saga in flight" (the state a killed incarnation left says
                # so already): this incarnation has committed batches of its own
                wait_in_flight(bootstrap, prefix, codec, fresh)
                time.sleep(rng.uniform(0.1, 1.0))  # mid-flight: batches are being committed
                orch.kill()
                assert_in_flight(bootstrap, prefix, codec, started, f"kill {orch.starts}")
                # a second wave arrives while the orchestrator is down
                fresh = [f"{i}-late{orch.starts}" for i in ids[:10]]
                _start_sagas(client, fresh)
                orch.start()
        late = [f"{i}-late{n}" for n in (1, 2, 3) for i in ids[:10]]
        wait_all_terminal(bootstrap, prefix, codec, ids + late, timeout=120)
        assert orch.stop() == 0
    finally:
        orch.kill_if_running()
        responder.stop()
    assert responder.error is None
    states = check_saga_invariants(bootstrap, prefix, codec, ids + late)
    assert {s.status for s in states.values()} == {"completed"}


def test_two_orchestrators_one_killed(settings: Settings, tmp_path: Path) -> None:
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    ids = [f"pair-{i}" for i in range(120)]
    responder = Responder(bootstrap, prefix, codec, sleep_ms=400).start()  # sagas last > 2 s
    first = OrchestratorProcess(settings, APP, tmp_path, "one")
    second = OrchestratorProcess(settings, APP, tmp_path, "two")
    try:
        first.start()
        second.start()
        first.wait_assigned()
        second.wait_assigned()
        with SagaClient(settings) as client:
            _start_sagas(client, ids)
            wait_in_flight(bootstrap, prefix, codec, ids)
            time.sleep(0.5)
            second.kill()  # never restarted: "one" takes over after the session timeout
            assert_in_flight(bootstrap, prefix, codec, ids, "the kill of 'two'")
        wait_all_terminal(bootstrap, prefix, codec, ids, timeout=120)
        assert first.stop() == 0
    finally:
        first.kill_if_running()
        second.kill_if_running()
        responder.stop()
    assert responder.error is None
    check_saga_invariants(bootstrap, prefix, codec, ids)


def test_scale_up_and_down_under_load(settings: Settings, tmp_path: Path) -> None:
    """A second orchestrator joins while sagas stream in, then the first is stopped."""
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    ids = [f"scale-{i}" for i in range(200)]
    responder = Responder(bootstrap, prefix, codec).start()
    first = OrchestratorProcess(settings, APP, tmp_path, "first")
    second = OrchestratorProcess(settings, APP, tmp_path, "second")

    def stream() -> None:  # a steady trickle, so rebalances meet sagas in flight
        with SagaClient(settings) as client:
            for saga_id in ids:
                client.start(
                    Pipeline, PipeData(label=saga_id), saga_id=saga_id, check_existing=False
                )
                time.sleep(0.02)

    sender = threading.Thread(target=stream, daemon=True)
    try:
        first.start()
        first.wait_assigned()
        sender.start()
        second.start()  # joins mid-stream: eager rebalance with work in flight
        second.wait_assigned()
        time.sleep(1.0)
        assert first.stop() == 0  # clean stop mid-stream; "second" takes over
        sender.join(60)
        wait_all_terminal(bootstrap, prefix, codec, ids, timeout=120)
        assert second.stop() == 0
    finally:
        first.kill_if_running()
        second.kill_if_running()
        responder.stop()
    assert responder.error is None
    check_saga_invariants(bootstrap, prefix, codec, ids)
