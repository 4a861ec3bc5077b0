"""A secured ``sagaline dev up`` end to end: owner-only credentials, loopback only,
logins refused without them, and no password in any output, error message or log.

The commands run as real subprocesses (``python -m sagaline.orchestrator.cli``) that
find the stack through ``.sagaline/dev.env`` only, as a developer's shell does.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from sagaline.orchestrator.config import KAFKA_SECURITY_KEYS, read_env_file
from sagaline.orchestrator.devenv.credentials import StackCredentials

pytestmark = pytest.mark.integration


def _env(dev_env: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", *KAFKA_SECURITY_KEYS}
    }
    return {**env, "SAGALINE_DEV_ENV": str(dev_env), **extra}


def _run(dev_env: Path, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagaline.orchestrator.cli", *argv],
        env=_env(dev_env, **extra),
        cwd=dev_env.parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def dev_env(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / ".sagaline" / "dev.env"
    yield path
    _run(path, "dev", "down", "--purge")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secured_dev_stack_keeps_its_secrets(dev_env: Path) -> None:
    up = _run(dev_env, "dev", "up", "--json")
    assert up.returncode == 0, up.stderr
    status = json.loads(up.stdout)
    creds = StackCredentials.ensure(dev_env.parent / "secrets")
    secrets = creds.secrets()
    settings = read_env_file(dev_env)

    # owner-only credentials; dev.env names files and holds no password
    assert _mode(creds.directory) == 0o700
    assert all(_mode(p) == 0o600 for p in creds.directory.iterdir())
    assert _mode(dev_env) == 0o600
    assert settings["SAGALINE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    # both servers on loopback only
    assert status["kafka"]["address"].startswith("127.0.0.1:")
    assert "@127.0.0.1:" in status["postgres"]["address"]

    outputs = [up]
    outputs.append(_run(dev_env, "dev", "status"))
    outputs.append(_run(dev_env, "dev", "status", "--json"))
    outputs.append(_run(dev_env, "--debug", "dev", "smoke"))
    outputs.append(_run(dev_env, "topics", "ensure", "--partitions", "2"))
    outputs.append(_run(dev_env, "--debug", "status", "no-such-saga", "--from", "state"))
    assert outputs[3].returncode == 0, outputs[3].stderr
    assert outputs[4].returncode == 0, outputs[4].stderr
    # errors: a wrong Kafka password, and a PostgreSQL URL that carries a password
    wrong = _run(dev_env, "topics", "ensure", SAGALINE_KAFKA_PASSWORD="wrong-" + secrets[0])
    assert wrong.returncode != 0
    bad_url = f"postgresql://postgres:{creds.postgres_password}@127.0.0.1:1/sagaline"
    broken_pg = _run(dev_env, "dev", "smoke", DATABASE_URL=bad_url)
    assert broken_pg.returncode != 0
    outputs += [wrong, broken_pg]

    # logins without the credentials are refused
    kafka = settings["KAFKA_BOOTSTRAP_SERVERS"]
    plain = AdminClient({"bootstrap.servers": kafka, "log_level": 0})
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=5)
    no_password = settings["DATABASE_URL"].split("?", 1)[0]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(no_password, connect_timeout=5, passfile="/dev/null").close()

    texts = [o.stdout + o.stderr for o in outputs]
    logs = _log_files(status)
    assert logs, "no server log found"
    texts += [p.read_text(encoding="utf-8", errors="replace") for p in logs]
    for secret in [*secrets, "wrong-" + secrets[0]]:
        leaks = [i for i, text in enumerate(texts) if secret in text]
        assert leaks == [], f"a password appears in outputs/logs {leaks}"


def _log_files(status: dict[str, dict[str, str]]) -> list[Path]:
    found: list[Path] = []
    for component in ("kafka", "postgres"):
        base = Path(status[component]["data_dir"])
        found += [p for p in base.rglob("*.log") if p.is_file()]
    return found
