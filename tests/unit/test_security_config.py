"""Kafka security resolution, credentials files and ACL bindings (no servers needed)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509

from sagaline.orchestrator.config import (
    EnvSettings,
    KafkaSecurity,
    TopicNames,
    kafka_security_from_env,
    redact_url,
)
from sagaline.orchestrator.core.errors import ConfigError
from sagaline.orchestrator.devenv.credentials import KAFKA_ROLES, StackCredentials
from sagaline.orchestrator.runtime.acls import acl_bindings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _no_dev_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAGALINE_DEV_ENV", str(tmp_path / "absent" / "dev.env"))


def test_plaintext_unless_told_otherwise() -> None:
    assert kafka_security_from_env({}).client_config() == {}


def test_sasl_ssl_takes_the_password_from_the_credentials_file(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"admin": "a-pw", "worker": "w-pw"}), encoding="utf-8")
    env = {
        "SAGALINE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "SAGALINE_KAFKA_CREDENTIALS": str(users),
        "SAGALINE_KAFKA_CA": "/ca.pem",
        "SAGALINE_KAFKA_USER": "worker",
    }
    security = kafka_security_from_env(env)
    assert security.client_config() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "worker",
        "sasl.password": "w-pw",
        "ssl.ca.location": "/ca.pem",
    }
    assert "w-pw" not in repr(security)
    explicit = kafka_security_from_env({**env, "SAGALINE_KAFKA_PASSWORD": "given"})
    assert explicit.password == "given"
    with pytest.raises(ConfigError, match="no entry for nobody"):
        kafka_security_from_env({**env, "SAGALINE_KAFKA_USER": "nobody"})


def test_a_missing_password_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="no Kafka password for admin"):
        kafka_security_from_env({"SAGALINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("postgresql://u:s3cret@h:5/db?x=1") == "postgresql://u:***@h:5/db?x=1"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_redact_url_hides_passwords_in_every_form() -> None:
    """Review finding: a libpq key=value DATABASE_URL came back with its password."""
    userinfo = redact_url("postgresql://app:hunter2@db:5432/main")
    assert userinfo == "postgresql://app:***@db:5432/main"
    query = redact_url("postgresql://db/main?user=app&password=hunter2&sslmode=require")
    assert "hunter2" not in query and "password=***" in query and "sslmode=require" in query
    conninfo = redact_url("host=db port=5432 user=app password=hunter2 dbname=main")
    assert "hunter2" not in conninfo and "password=***" in conninfo and "host=db" in conninfo
    plain = "host=db user=app dbname=main"
    assert redact_url(plain) == plain
    assert redact_url("host='unterminated password=hunter2") == "***"


def test_a_kafka_config_that_is_not_json_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGALINE_KAFKA_CONFIG", "{bad")
    with pytest.raises(ConfigError) as raised:
        EnvSettings.load()
    assert str(raised.value) == "invalid setting SAGALINE_KAFKA_CONFIG: not valid JSON"


def test_credentials_are_owner_only_and_stable(tmp_path: Path) -> None:
    first = StackCredentials.ensure(tmp_path / "secrets")
    again = StackCredentials.ensure(tmp_path / "secrets")
    assert again.kafka_passwords == first.kafka_passwords
    assert again.postgres_password == first.postgres_password
    assert set(first.kafka_passwords) == set(KAFKA_ROLES)
    assert stat.S_IMODE(first.directory.stat().st_mode) == 0o700
    for path in first.directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    cert = x509.load_pem_x509_certificates(first.server_pem.read_bytes())[0]
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    assert not any(p in repr(first) for p in first.secrets())


def test_acls_never_let_a_worker_or_auditor_write_what_they_must_not() -> None:
    names = TopicNames("p")
    writes = {
        (b.principal, b.name)
        for b in acl_bindings(names)
        if b.operation.name == "WRITE" and b.restype.name == "TOPIC"
    }
    assert ("User:worker", names.journal) not in writes
    assert ("User:worker", names.tasks) not in writes
    assert ("User:client", names.replies) not in writes
    assert not any(p == "User:auditor" for p, _ in writes)
    assert {p for p, t in writes if t == names.journal} == {"User:orchestrator"}


def test_kafka_security_as_user_keeps_the_transport() -> None:
    base = KafkaSecurity("SASL_SSL", "admin", "x", "/ca.pem")
    other = base.as_user("relay", "y")
    assert (other.protocol, other.username, other.ca_location) == ("SASL_SSL", "relay", "/ca.pem")
