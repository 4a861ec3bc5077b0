"""The ``sagaline`` client commands against a running orchestrator (real Kafka)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from orchestrator_sagas import REGISTRY
from orchestrator_support import Responder, delete_prefix_topics, journals

from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator
from sagaline.schemas.commands import SignalSaga

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Settings]:
    names = TopicNames(f"{topic_prefix}-cli")
    yield Settings(kafka_bootstrap_servers=kafka_bootstrap, topics=names)
    delete_prefix_topics(kafka_bootstrap, names.prefix)


def sagaline(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    env["SAGALINE_TOPIC_PREFIX"] = settings.topics.prefix
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sagaline.orchestrator.cli import main; sys.exit(main())",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_topics_start_status_approve_wait(settings: Settings) -> None:
    created = sagaline(settings, "topics", "ensure", "--partitions", "2", "--json")
    assert created.returncode == 0, created.stderr
    assert settings.topics.state in json.loads(created.stdout)["topics"]
    codec = AvroCodec()
    bootstrap, prefix = settings.kafka_bootstrap_servers, settings.topics.prefix
    config = EngineConfig(instance_id="cli", group_id=f"{prefix}-orch")
    orch = Orchestrator(settings, CoreLogic(REGISTRY), config, codec=codec)
    thread = threading.Thread(target=orch.run, daemon=True)
    thread.start()
    responder = Responder(bootstrap, prefix, codec).start()
    try:
        started = sagaline(
            settings,
            "start",
            "--app",
            "orchestrator_sagas:registry",
            "--type",
            "test.approved",
            "--data",
            '{"label": "cli"}',
            "--id",
            "cli-1",
            "--json",
        )
        assert started.returncode == 0, started.stderr
        assert json.loads(started.stdout) == {"saga_id": "cli-1"}
        deadline = time.monotonic() + 60
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            shown = sagaline(settings, "status", "cli-1", "--json")
            if shown.returncode == 0:
                status = json.loads(shown.stdout)
                if status["waits"] == ["manager_ok"]:
                    break
            time.sleep(0.5)
        assert status.get("waits") == ["manager_ok"], status
        approved = sagaline(settings, "approve", "cli-1", "manager_ok", "--by", "carol@example.com")
        assert approved.returncode == 0, approved.stderr
        waited = sagaline(settings, "wait", "cli-1", "--timeout", "60", "--json")
        assert waited.returncode == 0, waited.stderr
        assert json.loads(waited.stdout)["status"] == "completed"
        missing = sagaline(settings, "status", "no-such-saga")
        assert missing.returncode == 2
        assert "no snapshot of saga 'no-such-saga'" in missing.stderr
    finally:
        orch.request_stop()
        thread.join(30)
        responder.stop()
    signals = [
        e.input
        for e in journals(bootstrap, prefix, codec)["cli-1"]
        if isinstance(e.input, SignalSaga)
    ]
    assert [(s.name, s.by, s.approved) for s in signals] == [
        ("manager_ok", "carol@example.com", True)
    ]
