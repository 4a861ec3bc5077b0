"""``sagaline dev up | status | smoke | down`` against the real processes they start."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagaline.orchestrator.cli import main
from sagaline.orchestrator.config import KAFKA_SECURITY_KEYS, read_env_file

pytestmark = pytest.mark.integration


@pytest.fixture
def dev_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / ".sagaline" / "dev.env"
    monkeypatch.setenv("SAGALINE_DEV_ENV", str(path))
    # The commands must find the servers through dev.env, not the session's settings.
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for key in KAFKA_SECURITY_KEYS:
        monkeypatch.delenv(key, raising=False)
    yield path
    main(["dev", "down", "--purge"])


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(capsys.readouterr().out)
    return loaded


def test_up_is_idempotent_smoke_passes_and_down_stops_everything(
    dev_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dev", "up", "--json"]) == 0
    first = _json(capsys)
    settings = read_env_file(dev_env)

    assert main(["dev", "up", "--json"]) == 0
    second = _json(capsys)
    assert main(["dev", "smoke", "--json"]) == 0
    smoke = _json(capsys)
    assert main(["dev", "status", "--json"]) == 0
    status = _json(capsys)
    assert main(["dev", "down", "--json"]) == 0
    down = _json(capsys)
    assert main(["dev", "status"]) == 1
    capsys.readouterr()

    assert first["all_running"] is True
    kafka, postgres = first["kafka"], first["postgres"]
    assert isinstance(kafka, dict) and isinstance(postgres, dict)
    secrets = dev_env.parent / "secrets"
    assert settings == {
        "KAFKA_BOOTSTRAP_SERVERS": kafka["address"],
        "DATABASE_URL": postgres["address"],
        "SAGALINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SAGALINE_KAFKA_CA": str(secrets / "ca.pem"),
        "SAGALINE_KAFKA_CREDENTIALS": str(secrets / "kafka-users.json"),
        "SAGALINE_KAFKA_USER": "admin",
        "SAGALINE_KEYS_DIR": str(dev_env.parent / "keys"),
        "SAGALINE_SIGNING": "true",
    }
    # one Ed25519 key per role principal, owner-only (records are signed with them)
    keys = dev_env.parent / "keys"
    assert keys.stat().st_mode & 0o077 == 0
    assert kafka["security"] == "SASL_SSL/SCRAM-SHA-512"
    assert postgres["security"] == "scram-sha-256"
    # The second `up` found the same processes instead of starting new ones.
    assert second["kafka"] == kafka and second["postgres"] == postgres
    assert smoke["ok"] is True
    steps = smoke["steps"]
    assert isinstance(steps, list)
    assert "kafka: a read_committed consumer sees exactly ['committed']" in steps
    assert status["all_running"] is True
    assert down["all_running"] is False
    assert down["stopped"] == ["kafka", "postgres"]
    assert not dev_env.exists()
