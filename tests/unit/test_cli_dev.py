"""The ``sagaline`` command line: parser wiring and clear one-line errors."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagaline.orchestrator.cli import COMMAND_MODULES, build_parser, main
from sagaline.orchestrator.devenv.errors import MissingToolError
from sagaline.orchestrator.devenv.kafka_dist import ensure_kafka_distribution

pytestmark = pytest.mark.unit


@pytest.fixture
def dev_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / ".sagaline" / "dev.env"
    monkeypatch.setenv("SAGALINE_DEV_ENV", str(path))
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_every_command_module_registers_a_group() -> None:
    parser = build_parser()
    assert COMMAND_MODULES[0] == "sagaline.orchestrator.cli.dev"
    args = parser.parse_args(["dev", "status", "--json"])
    assert args.json is True
    assert callable(args.handler)


def test_no_command_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 64
    assert "usage: sagaline" in capsys.readouterr().err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dev", "up", "--help"])
    assert exit_info.value.code == 0
    assert "--kafka-port" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["--kafka-port", "--postgres-port"])
def test_port_in_use_is_one_clear_line_and_exit_2(
    dev_env: Path, busy_port: int, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["dev", "up", option, str(busy_port)])

    err = capsys.readouterr().err
    assert code == 2
    assert err == f"sagaline: error: port {busy_port} on 127.0.0.1 is already in use; " + (
        "choose another or omit it\n"
    )
    assert not dev_env.exists()


def test_missing_java_is_one_clear_line_and_exit_2(
    dev_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("JAVA_HOME", raising=False)

    code = main(["dev", "up"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("sagaline: error: java is not installed")
    assert err.count("\n") == 1


def test_missing_maven_raises_missing_tool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(MissingToolError, match="Maven"):
        ensure_kafka_distribution(root=tmp_path / "cache")


def test_status_without_state_reports_not_running(
    dev_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["dev", "status", "--json"])

    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["all_running"] is False
    assert report["kafka"] is None and report["postgres"] is None
    assert report["env_file"] == str(dev_env)


def test_out_of_range_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["dev", "up", "--kafka-port", "70000"])
    assert exit_info.value.code == 2
    assert "port out of range: 70000" in capsys.readouterr().err


def test_down_when_nothing_runs_says_so(dev_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "down"]) == 0
    assert capsys.readouterr().out == "nothing to stop: the dev environment is not running\n"
    assert main(["dev", "down", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stopped"] == []
