"""The ``sagaline`` client commands against a running orchestrator (real Kafka, subprocesses).

Every case of issue 12 that needs an orchestrator: commands print what was
sent and the orchestrator's verdict; ``approve`` of an unknown saga exits 5
with the reason; a start the orchestrator rejects exits 6 with the dead
letter's reason; ``status`` of a compensated saga shows ``compensated`` for
the undone step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_alt_sagas import Approved as AltApproved
from cli_alt_sagas import OtherData
from orchestrator_sagas import REGISTRY
from orchestrator_support import Responder, delete_prefix_topics, journals

from sagaline.orchestrator.client import SagaClient, SagaRejected
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.orchestrator.runtime.signing_inputs import signed_identity
from sagaline.orchestrator.runtime.signing_runtime import signing_config
from sagaline.schemas.commands import SignalSaga

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
APP = "orchestrator_sagas:registry"


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str) -> Iterator[Settings]:
    # one orchestrator for the module's tests (their saga ids differ): one start-up, not three
    names = TopicNames(f"t-{uuid.uuid4().hex[:8]}-cli")
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


def sagaline(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    env["SAGALINE_TOPIC_PREFIX"] = settings.topics.prefix
    return subprocess.run(
        [sys.executable, "-m", "sagaline.orchestrator.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def orchestrator(settings: Settings) -> Iterator[Settings]:
    created = sagaline(settings, "topics", "ensure", "--partitions", "2", "--json")
    assert created.returncode == 0, created.stderr
    assert settings.topics.state in json.loads(created.stdout)["topics"]
    codec = AvroCodec()
    prefix = settings.topics.prefix
    config = EngineConfig(instance_id="cli", group_id=f"{prefix}-orch")
    orch = Orchestrator(settings, CoreLogic(REGISTRY), config, codec=codec)
    thread = threading.Thread(target=orch.run, daemon=True)
    thread.start()
    responder = Responder(settings.kafka_bootstrap_servers, prefix, codec).start()
    try:
        yield settings
    finally:
        orch.request_stop()
        thread.join(30)
        responder.stop()


def _start(settings: Settings, saga_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    data = '{"label": "cli"}'
    return sagaline(
        settings, "start", "--app", APP, "--type", "test.approved", "--data", data,
        "--id", saga_id, *extra,
    )  # fmt: skip


def _wait_for_approval(settings: Settings, saga_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        shown = sagaline(settings, "status", saga_id, "--json")
        if shown.returncode == 0:
            status = json.loads(shown.stdout)
            if [w["name"] for w in status["waits"]] == ["manager_ok"]:  # type: ignore[attr-defined]
                return status
        time.sleep(0.1)
    raise AssertionError(f"{saga_id} never waited for manager_ok: {status}")


def test_start_approve_wait_with_verdicts(orchestrator: Settings) -> None:
    settings = orchestrator
    started = _start(settings, "cli-1", "--wait", "--json")
    assert started.returncode == 0, started.stderr
    doc = json.loads(started.stdout)
    assert doc["saga_id"] == "cli-1"
    assert doc["verdict"]["outcome"] == "accepted"
    assert "SagaStarted" in doc["verdict"]["events"]
    status = _wait_for_approval(settings, "cli-1")
    assert status["waits"][0]["deadline"] is not None  # type: ignore[index]

    wrong = sagaline(settings, "approve", "cli-1", "no_such_wait", "--by", "carol", "--wait")
    assert wrong.returncode == 4, wrong.stdout + wrong.stderr
    assert "sent approval of 'no_such_wait' for saga 'cli-1' by carol" in wrong.stdout
    assert "orchestrator: ignored" in wrong.stderr

    approved = sagaline(settings, "approve", "cli-1", "manager_ok", "--by", "carol@example.com")
    assert approved.returncode == 0, approved.stderr  # not a terminal: no --wait by default
    assert "sent approval of 'manager_ok' for saga 'cli-1'" in approved.stdout
    waited = sagaline(settings, "wait", "cli-1", "--timeout", "60", "--json")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["status"] == "completed"

    missing = sagaline(settings, "status", "no-such-saga")
    assert missing.returncode == 5
    assert "no snapshot of saga 'no-such-saga'" in missing.stderr
    assert "Traceback" not in missing.stderr
    signals = [
        e.input
        for e in journals(settings.kafka_bootstrap_servers, settings.topics.prefix, AvroCodec())[
            "cli-1"
        ]
        if isinstance(e.input, SignalSaga)
    ]
    # with signing on, the journal records the verified signer (the CLI's: admin) first
    signed = signing_config().enabled
    by = [signed_identity("admin", c) if signed else c for c in ("carol", "carol@example.com")]
    assert [(s.name, s.by, s.approved) for s in signals] == [
        ("no_such_wait", by[0], True),
        ("manager_ok", by[1], True),
    ]


def test_unknown_saga_and_rejected_start_exit_non_zero(orchestrator: Settings) -> None:
    settings = orchestrator
    unknown = sagaline(settings, "approve", "no-such-saga", "manager", "--by", "m", "--wait")
    assert unknown.returncode == 5, unknown.stdout + unknown.stderr
    assert "unknown saga 'no-such-saga'" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    refused = sagaline(
        settings, "start", "--app", "cli_alt_sagas:registry", "--type", "test.approved",
        "--data", '{"label": "x"}', "--id", "cli-refused", "--wait",
    )  # fmt: skip
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert "rejected (dead-lettered)" in refused.stderr
    assert "OtherData" in refused.stderr  # the dead letter's reason names the model
    waited = sagaline(settings, "wait", "cli-refused", "--timeout", "30")
    assert waited.returncode == 6, waited.stdout + waited.stderr
    assert "the orchestrator rejected saga 'cli-refused'" in waited.stderr

    # the Python client hears of it too: confirm_start and SagaHandle.wait raise
    data = OtherData(label="py")
    with SagaClient(settings) as client:
        handle = client.start(AltApproved, data, saga_id="py-refused")
        assert handle.receipt is not None
        with pytest.raises(SagaRejected, match="OtherData"):
            client.confirm_start(handle, data, timeout=30)
        with pytest.raises(SagaRejected):
            handle.wait(timeout=30)


def test_status_shows_compensated_steps(orchestrator: Settings) -> None:
    settings = orchestrator
    assert _start(settings, "cli-comp").returncode == 0
    _wait_for_approval(settings, "cli-comp")
    rejected = sagaline(settings, "reject", "cli-comp", "manager_ok", "--by", "m", "--wait")
    assert rejected.returncode == 0, rejected.stdout + rejected.stderr
    assert "orchestrator: accepted" in rejected.stdout
    waited = sagaline(settings, "wait", "cli-comp", "--timeout", "60")
    assert waited.returncode == 1, waited.stdout + waited.stderr
    shown = sagaline(settings, "status", "cli-comp")
    assert shown.returncode == 0, shown.stderr
    assert "compensated" in shown.stdout.splitlines()[0]
    assert any(line.split() == ["reserve", "compensated"] for line in shown.stdout.splitlines()), (
        shown.stdout
    )
    doc = json.loads(sagaline(settings, "status", "cli-comp", "--json").stdout)
    assert doc["steps"]["reserve"]["status"] == "compensated"
    assert doc["steps"]["reserve"]["forward_status"] == "succeeded"
