"""Schedules on real Kafka: every tick starts exactly one saga, across SIGKILLs during
ticks, restarts, downtime and rebalances; a re-fired tick is harmless; pause and resume
are commands the orchestrator decides and keeps.

The orchestrator is the real ``sagaline orchestrator run`` subprocess with
``schedule_app:app`` (one saga every two seconds, catch-up ``all``).  Each kill
lands 0-40 ms after a tick is due (while its transaction is being decided or
committed), and some restarts wait out several ticks first (downtime); then a
second orchestrator joins and the first leaves (two rebalances).  Afterwards
the committed topics are read: each tick from the schedule's declaration to
its cursor has exactly one ``StartSaga`` on the commands topic, exactly one
saga and exactly one ``SagaStarted`` in the journal.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from orchestrator_process import ROOT, OrchestratorProcess
from orchestrator_support import delete_prefix_topics, journals, latest_snapshots, read_committed
from schedule_app import EVERY_2S, TickData, Ticked

from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.core.schedule_decide import ScheduleData, schedule_data
from sagaline.orchestrator.runtime.core import AvroCodec
from sagaline.orchestrator.runtime.signing_inputs import signed_identity
from sagaline.orchestrator.runtime.signing_runtime import signing_config
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.events import SagaStarted
from sagaline.schemas.state import SagaState

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SCHEDULE_ID = EVERY_2S.schedule_id
APP = "schedule_app:app"


def _recorded(signer: str, claimed: str) -> str:
    """Who the journal records: with signing on, the verified signer heads the claim
    (the scheduler's starts are the orchestrator's, the CLI signs as ``admin``)."""
    return signed_identity(signer, claimed) if signing_config().enabled else claimed


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-sched")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=4))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


def schedule_state(settings: Settings, codec: AvroCodec) -> ScheduleData | None:
    states = latest_snapshots(settings.kafka_bootstrap_servers, settings.topics.prefix, codec)
    state = states.get(SCHEDULE_ID)
    return schedule_data(state) if state is not None else None


def wait_schedule(
    settings: Settings, codec: AvroCodec, done: object, what: str, timeout: float = 60.0
) -> ScheduleData:
    deadline = time.monotonic() + timeout
    data = None
    while time.monotonic() < deadline:
        data = schedule_state(settings, codec)
        if data is not None and done(data):  # type: ignore[operator]
            return data
        time.sleep(0.3)
    raise AssertionError(f"the schedule never {what}: {data}")


def sleep_to_tick(offset_s: float) -> None:
    """Sleep until ``offset_s`` after the next two-second tick."""
    now = time.time()
    time.sleep((int(now // 2) + 1) * 2 - now + offset_s)


def wait_all_started(settings: Settings, codec: AvroCodec, timeout: float = 60.0) -> None:
    """Until every committed StartSaga of the schedule has its saga's snapshot."""
    deadline = time.monotonic() + timeout
    while True:
        ids = {s.envelope.saga_id for s in committed_starts(settings, codec)}
        prefix = settings.topics.prefix
        missing = ids - set(latest_snapshots(settings.kafka_bootstrap_servers, prefix, codec))
        if not missing:
            return
        assert time.monotonic() < deadline, f"never decided: {sorted(missing)[:3]}"
        time.sleep(0.5)


def committed_starts(settings: Settings, codec: AvroCodec) -> list[StartSaga]:
    starts = []
    for rec in read_committed(settings.kafka_bootstrap_servers, settings.topics.commands):
        if rec.key is None or rec.key.startswith("schedule:") or rec.value is None:
            continue
        record = codec.decode(rec.value, (StartSaga,))
        assert isinstance(record, StartSaga)
        starts.append(record)
    return starts


def test_sigkill_during_ticks_and_a_rebalance_lose_none_and_double_none(
    settings: Settings, tmp_path: Path
) -> None:
    codec = AvroCodec()
    orch = OrchestratorProcess(settings, APP, tmp_path, "sched-0")
    other = OrchestratorProcess(settings, APP, tmp_path, "sched-1")
    orch.start()
    try:
        orch.wait_assigned()
        wait_schedule(settings, codec, lambda d: d.started >= 2, "started two sagas")
        rng = random.Random(15)
        for downtime in (0.0, 5.0, 0.0, 3.0):
            sleep_to_tick(rng.uniform(0.0, 0.04))
            orch.kill()
            time.sleep(downtime)  # ticks pass while no orchestrator runs
            orch.start()
            orch.wait_assigned()
        # a rebalance: a second orchestrator joins, then the first leaves
        other.start()
        other.wait_assigned()
        orch.stop()
        before = schedule_state(settings, codec)
        assert before is not None
        wait_schedule(settings, codec, lambda d: d.started >= before.started + 2, "went on")

        # a re-fired tick (the same StartSaga again) starts nothing new
        client = SagaClient(settings, codec=codec)
        try:
            first = committed_starts(settings, codec)[0]
            again = TickData.model_validate_json(first.data.data or b"")
            client.start(Ticked, again, saga_id=first.envelope.saga_id, check_existing=False)
            # stop the ticks, then let the orchestrator decide every start it committed
            client.pause(SCHEDULE_ID, by="test")
            wait_schedule(settings, codec, lambda d: d.paused, "paused")
            wait_all_started(settings, codec)
            time.sleep(1.0)
        finally:
            client.close()
    finally:
        orch.stop()
        other.stop()

    data = schedule_state(settings, codec)
    assert data is not None and data.cursor is not None
    expected = [
        EVERY_2S.saga_id(t) for t in EVERY_2S.ticks_between(data.declared_at, data.cursor, 10_000)
    ]
    starts = Counter(s.envelope.saga_id for s in committed_starts(settings, codec))
    refired = first.envelope.saga_id
    starts[refired] -= 1  # the test's own duplicate
    assert [i for i, n in starts.items() if n > 1] == [], "a tick started twice"
    assert sorted(starts) == sorted(expected), "a tick was lost"
    assert data.started == len(expected) and data.skipped == 0
    # downtime: the catch-up started the missed ticks (more ticks than incarnations)
    assert len(expected) >= 10

    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    states = latest_snapshots(bootstrap, prefix, codec)
    entries = journals(bootstrap, prefix, codec)
    for saga_id in expected:
        state = states[saga_id]
        assert isinstance(state, SagaState) and state.requested_by == _recorded(
            "orchestrator", SCHEDULE_ID
        )
        started = [
            e for entry in entries[saga_id] for e in entry.events if isinstance(e, SagaStarted)
        ]
        assert len(started) == 1, f"{saga_id} started {len(started)} times"


def sagaline(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    conn = ["--bootstrap", settings.kafka_bootstrap_servers, "--prefix", settings.topics.prefix]
    return subprocess.run(
        [sys.executable, "-m", "sagaline.orchestrator.cli", *argv, *conn],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_cli_pauses_and_resumes_a_schedule_durably(settings: Settings, tmp_path: Path) -> None:
    codec = AvroCodec()
    orch = OrchestratorProcess(settings, APP, tmp_path, "sched-0")
    orch.start()
    try:
        orch.wait_assigned()
        wait_schedule(settings, codec, lambda d: d.started >= 1, "started a saga")
        unknown = sagaline(settings, "schedules", "pause", "nightly")
        assert unknown.returncode == 5
        assert unknown.stderr.strip().count("\n") == 0 and "no schedule 'nightly'" in unknown.stderr

        paused = sagaline(
            settings, "schedules", "pause", "every-2s", "--by", "ops", "--reason", "t"
        )
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.strip() == "paused schedule every-2s (by ops)"
        at_pause = schedule_state(settings, codec)
        assert (
            at_pause is not None
            and at_pause.paused
            and at_pause.changed_by == _recorded("admin", "ops")
        )
        # the pause is durable: a restarted orchestrator keeps it
        orch.kill()
        orch.start()
        orch.wait_assigned()
        time.sleep(5.0)
        still = schedule_state(settings, codec)
        assert still is not None and still.paused and still.started == at_pause.started
        listed = sagaline(settings, "schedules", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert '"status": "paused"' in listed.stdout

        resumed = sagaline(settings, "schedules", "resume", "every-2s", "--by", "ops")
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.strip() == "resumed schedule every-2s (by ops)"
        after = wait_schedule(
            settings, codec, lambda d: d.started >= at_pause.started + 2, "resumed"
        )
        assert (
            after.changed_by == _recorded("admin", "ops") and after.skipped >= 2
        )  # the ticks of the pause
    finally:
        orch.stop()
    ticks = [
        TickData.model_validate_json(s.data.data or b"").tick
        for s in committed_starts(settings, codec)
    ]
    # The pause takes effect when the orchestrator decides it, not at the command's
    # own time (a tick decided between the two is started, rightly): no tick after
    # the last one started before the pause, up to the resume, ever starts.
    assert at_pause.last_started is not None and after.changed_at is not None
    assert not [t for t in ticks if at_pause.last_started < t <= after.changed_at]
    final = schedule_state(settings, codec)  # ticks went on until the stop
    assert final is not None
    assert len(ticks) == len(set(ticks)) == final.started
