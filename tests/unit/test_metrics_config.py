"""Metric names, the Grafana dashboard, the settings model, `sagaline config` (no infra)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.core import REGISTRY

from sagaline.orchestrator.cli.config_cmds import kafka_passthrough, redact_kafka
from sagaline.orchestrator.cli.main import build_parser, main
from sagaline.orchestrator.config import EnvSettings, Settings
from sagaline.orchestrator.console.redact import REDACTED
from sagaline.orchestrator.core.errors import ConfigError
from sagaline.orchestrator.runtime import kafka_config, metrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "sagaline-dashboard.json"


def _sagaline_names() -> set[str]:
    names: set[str] = set()
    for collector in list(REGISTRY._collector_to_names):
        for family in collector.collect():
            if family.name.startswith("sagaline_"):
                names.update(s.name for s in family.samples)
                names.add(family.name)
    return names | {"sagaline_approvals_open"}


def test_metric_names_carry_units_and_counters_end_in_total() -> None:
    assert metrics.SAGAS_STARTED._name == "sagaline_sagas_started"  # exposed as ..._total
    units = ("_seconds", "_total", "_records", "_rows", "_size", "_attempts", "_open")
    families = [
        "sagaline_sagas_started_total",
        "sagaline_sagas_ended_total",
        "sagaline_approvals_open",
        "sagaline_step_duration_seconds",
        "sagaline_step_attempts",
        "sagaline_decision_batch_size",
        "sagaline_transaction_commit_seconds",
        "sagaline_consumer_lag_records",
        "sagaline_outbox_backlog_rows",
        "sagaline_relay_delay_seconds",
        "sagaline_dead_letters_total",
        "sagaline_restore_duration_seconds",
    ]
    assert all(name.endswith(units) for name in families)


def test_the_dashboard_uses_only_metrics_that_exist() -> None:
    metrics.observe_step("t", "s", "step", 1, "succeeded", 0.1)  # make labelled series appear
    metrics.SAGAS_STARTED.labels("t").inc(0)
    metrics.SAGAS_ENDED.labels("t", "completed").inc(0)
    metrics.DEAD_LETTERS.labels("worker", "X").inc(0)
    metrics.CONSUMER_LAG.labels("g", "t", "0").set(0)
    known = _sagaline_names()
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"sagaline_[a-z_]+", target["expr"])
    }
    assert len(dashboard["panels"]) >= 10
    assert used and used <= known, used - known


def test_observe_batch_counts_new_and_finished_sagas() -> None:
    class State:
        def __init__(self, status: str) -> None:
            self.saga_type, self.status, self.waits = "unit_t", status, []

    class Part:
        def __init__(self) -> None:
            self.active: dict[str, object] = {"old": State("running")}
            self.finished: dict[str, object] = {}

    before_started = metrics.SAGAS_STARTED.labels("unit_t")._value.get()
    before_done = metrics.SAGAS_ENDED.labels("unit_t", "compensated")._value.get()
    overlay = {"new": State("running"), "old": State("compensated")}
    metrics.observe_batch(overlay, {"new": 0, "old": 0}, {0: Part()}, 2)
    assert metrics.SAGAS_STARTED.labels("unit_t")._value.get() == before_started + 1
    assert metrics.SAGAS_ENDED.labels("unit_t", "compensated")._value.get() == before_done + 1


def test_env_settings_validate_with_one_prefix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAGALINE_DEV_ENV", str(tmp_path / "dev.env"))
    (tmp_path / "dev.env").write_text("KAFKA_BOOTSTRAP_SERVERS=file:9092\n", encoding="utf-8")
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("SAGALINE_METRICS_PORT", "9464")
    monkeypatch.setenv("SAGALINE_KAFKA_CONFIG", '{"linger.ms": 5, "sasl.password": "hunter2"}')
    env = EnvSettings.load()
    assert env.metrics_port == 9464 and env.kafka_bootstrap_servers == "file:9092"
    settings = Settings.from_env()
    assert settings.kafka_bootstrap_servers == "file:9092"
    assert settings.kafka_config == {"linger.ms": 5, "sasl.password": "hunter2"}
    assert "hunter2" not in repr(settings)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env:9092")
    assert Settings.from_env().kafka_bootstrap_servers == "env:9092"  # the environment wins
    monkeypatch.setenv("SAGALINE_METRICS_PORT", "99999")
    with pytest.raises(ConfigError, match="SAGALINE_METRICS_PORT"):
        EnvSettings.load()


def test_kafka_config_passes_through_every_builder(tmp_path: Path) -> None:
    file = tmp_path / "client.properties"
    file.write_text("# tuned\nsocket.keepalive.enable=true\nlinger.ms=7\n", encoding="utf-8")
    args = build_parser().parse_args(
        ["relay", "run", "--kafka-config-file", str(file), "--kafka-config", "linger.ms=9"]
    )
    values = kafka_passthrough(EnvSettings(), args)
    assert values == {"socket.keepalive.enable": "true", "linger.ms": "9"}
    try:
        kafka_config.set_passthrough(values)
        built = kafka_config.transactional_producer_config("b:1", "tx", extra={"linger.ms": 1})
        assert built["linger.ms"] == "9" and built["socket.keepalive.enable"] == "true"
        assert kafka_config.admin_config("b:1")["linger.ms"] == "9"
    finally:
        kafka_config.set_passthrough({})
    assert "socket.keepalive.enable" not in kafka_config.client_producer_config("b:1")


def test_config_command_redacts_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAGALINE_DEV_ENV", str(tmp_path / "none.env"))
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:s3cret@db:5432/x")
    monkeypatch.setenv("SAGALINE_KAFKA_CONFIG", '{"sasl.oauthbearer.client.secret": "tok"}')
    code = main(["config", "--kafka-config", "ssl.key.password=pw", "--kafka-config", "acks=all"])
    out = capsys.readouterr().out
    assert code == 0
    assert "s3cret" not in out and "tok" not in out and "=pw" not in out and "= pw" not in out
    assert "acks = all" in out and "DATABASE_URL = postgresql://app:***@db:5432/x" in out
    assert main(["config", "--kafka-config", "novalue"]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err
    assert redact_kafka({"sasl.password": "x", "acks": 1}) == {"sasl.password": REDACTED, "acks": 1}
