"""SIGKILL an orchestrator that runs local steps; every database effect stays exactly once.

The orchestrator is a real ``sagaline orchestrator run`` subprocess over the sagas of
``tests/integration/local_step_sagas.py``; its local database steps insert one effect row
per execution (no unique key).  It is killed at random moments while batches of local steps
are running (the calls file grows: a batch is running, its Kafka transaction not committed),
and once at the crash point between a local step's PostgreSQL commit and the batch's Kafka
commit.  After the restarts every saga must be finished, every effect row present exactly
once, and the topics must pass the orchestrator's invariants.  A local step without a
database is at-least-once: killed inside it, it runs again after the restart.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
sys.path.insert(0, str(INTEGRATION))

from local_step_sagas import EFFECTS_TABLE, Hang, KillOnce, LocalData, LocalDb  # noqa: E402
from orchestrator_process import OrchestratorProcess  # noqa: E402
from orchestrator_support import (  # noqa: E402
    check_saga_invariants,
    delete_prefix_topics,
    wait_all_terminal,
)

from sagaline.orchestrator.client import SagaClient  # noqa: E402
from sagaline.orchestrator.config import Settings, TopicNames  # noqa: E402
from sagaline.orchestrator.runtime.core import AvroCodec  # noqa: E402
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics  # noqa: E402

pytestmark = pytest.mark.chaos

APP = "local_step_sagas:registry"


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-lkill")
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=2))
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


@pytest.fixture
def app_env(fresh_database_url: str, tmp_path: Path) -> dict[str, str]:
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute(EFFECTS_TABLE)
    return {"DATABASE_URL": fresh_database_url, "SAGALINE_TEST_CALLS": str(tmp_path / "calls")}


def _calls(env: dict[str, str]) -> list[str]:
    path = Path(env["SAGALINE_TEST_CALLS"])
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def _wait_calls(env: dict[str, str], more_than: int, orch: OrchestratorProcess) -> None:
    """Block until local steps are running (the calls file grew past ``more_than``)."""
    deadline = time.monotonic() + 90
    while len(_calls(env)) <= more_than:
        assert orch.running(), orch.log_tail()
        assert time.monotonic() < deadline, "no local step ran:\n" + orch.log_tail()
        time.sleep(0.02)


def test_sigkill_mid_batch_keeps_local_database_effects_exactly_once(
    settings: Settings, app_env: dict[str, str], tmp_path: Path
) -> None:
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "0")) or None)
    ok = [f"ok-{i}" for i in range(60)]
    bad = [f"bad-{i}" for i in range(15)]
    env = {**app_env, "SAGALINE_TEST_STEP_SLEEP_S": "0.02"}
    orch = OrchestratorProcess(settings, APP, tmp_path, "local", env=env)
    try:
        with SagaClient(settings) as client:  # all waiting: the first batch takes them all
            for saga_id in ok:
                client.start(LocalDb, LocalData(label=saga_id), saga_id=saga_id, flush=False)
            for saga_id in bad:
                data = LocalData(label=saga_id, fail_at="credit")
                client.start(LocalDb, data, saga_id=saga_id, flush=False)
        orch.start()
        for _ in range(3):  # random moments while a batch's local steps run
            _wait_calls(env, len(_calls(env)) + rng.randint(1, 40), orch)
            orch.kill()
            orch.start()
        # and once exactly between a local step's PostgreSQL commit and the Kafka commit
        orch.kill()
        crash = {"SAGALINE_CRASH_AT": "local_after_commit", "SAGALINE_CRASH_SKIP": "3"}
        orch.start(crash)
        assert orch.wait_exit(120) == -signal.SIGKILL, orch.log_tail()
        orch.start()
        states = wait_all_terminal(bootstrap, prefix, codec, ok + bad, timeout=180)
        assert orch.stop() == 0
    finally:
        orch.kill_if_running()
    assert {states[i].status for i in ok} == {"completed"}
    assert {states[i].status for i in bad} == {"compensated"}
    with psycopg.connect(app_env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT saga_id, step FROM local_effects").fetchall()
    effects = Counter(f"{saga}/{step}" for saga, step in rows)
    expected = [f"{i}/{s}" for i in ok for s in ("debit", "credit", "notify")]
    expected += [f"{i}/{s}" for i in bad for s in ("debit", "refund")]
    assert sorted(effects) == sorted(expected)
    assert {n for n in effects.values()} == {1}, [k for k, n in effects.items() if n > 1]
    # the kills landed inside batches: some step functions ran more than once
    reran = [k for k, n in Counter(_calls(env)).items() if n > 1]
    assert reran, "no kill interrupted a running batch"
    check_saga_invariants(bootstrap, prefix, codec, ok + bad)


def test_a_local_step_without_a_database_runs_again_after_a_kill(
    settings: Settings, app_env: dict[str, str], tmp_path: Path
) -> None:
    """At-least-once, documented: the reply died with the batch, so the step re-runs."""
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    orch = OrchestratorProcess(settings, APP, tmp_path, "local", env=app_env)
    try:
        orch.start()
        with SagaClient(settings) as client:
            client.start(KillOnce, LocalData(label="k"), saga_id="kill-once")
        assert orch.wait_exit(120) == -signal.SIGKILL, orch.log_tail()
        orch.start()
        states = wait_all_terminal(bootstrap, prefix, codec, ["kill-once"], timeout=120)
        assert orch.stop() == 0
    finally:
        orch.kill_if_running()
    assert states["kill-once"].status == "completed"
    assert _calls(app_env) == ["kill-once/fragile", "kill-once/fragile"]
    check_saga_invariants(bootstrap, prefix, codec, ["kill-once"])


def test_a_hung_local_step_fails_its_saga_and_never_holds_the_process(
    settings: Settings, app_env: dict[str, str], tmp_path: Path
) -> None:
    """Past its timeout the step is abandoned (its thread sleeps on); SIGTERM still exits."""
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    orch = OrchestratorProcess(settings, APP, tmp_path, "local", env=app_env)
    try:
        orch.start()
        with SagaClient(settings) as client:
            client.start(Hang, LocalData(label="h"), saga_id="hang-1")
        states = wait_all_terminal(bootstrap, prefix, codec, ["hang-1"], timeout=120)
        assert orch.stop() == 0  # the step's thread is still sleeping: it does not hold exit
    finally:
        orch.kill_if_running()
    assert states["hang-1"].status == "failed"
    assert "StepTimeout" in (states["hang-1"].steps["stuck"].last_error or "")
    assert _calls(app_env) == ["hang-1/stuck"]
    check_saga_invariants(bootstrap, prefix, codec, ["hang-1"])
