"""The ``sagaline`` command line as a user meets it when something is wrong (subprocesses).

A stopped broker: every writing command exits 3 with "nothing was sent",
within the documented bound, and prints no librdkafka log line.  Malformed
input: one line naming the problem, exit 2, no traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
APP = "orchestrator_sagas:registry"
DATA = '{"label": "x"}'

WRITING_COMMANDS: dict[str, list[str]] = {
    "start (no --id)": ["start", "--app", APP, "--type", "test.approved", "--data", DATA],
    "start --id": ["start", "--app", APP, "--type", "test.approved", "--data", DATA, "--id", "s1"],
    "signal": ["signal", "s1", "go", "--by", "me"],
    "approve": ["approve", "s1", "manager_ok", "--by", "me"],
    "reject": ["reject", "s1", "manager_ok", "--by", "me"],
    "cancel": ["cancel", "s1", "--by", "me"],
    "pause": ["pause", "s1", "--by", "me"],
    "resume": ["resume", "s1", "--by", "me"],
    "retry-step": ["retry-step", "s1", "reserve", "--by", "me"],
    "skip-step": ["skip-step", "s1", "reserve", "--by", "me"],
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens on it once the socket is closed


def _env(bootstrap: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env["SAGALINE_TOPIC_PREFIX"] = "cli-errors"
    return env


def _run(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagaline.orchestrator.cli", *args],
        env=_env(bootstrap),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_writing_command_says_nothing_was_sent_to_a_stopped_broker() -> None:
    bootstrap = f"127.0.0.1:{_closed_port()}"
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "sagaline.orchestrator.cli", *args],
            env=_env(bootstrap),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in WRITING_COMMANDS.items()
    }
    results = {name: proc.communicate(timeout=120) for name, proc in procs.items()}
    expected = f"sagaline: error: Kafka at {bootstrap} did not answer within 10 s; nothing was sent"
    for name, (out, err) in results.items():
        assert procs[name].returncode == 3, (name, out, err)
        assert err.strip() == expected, (name, err)
        assert out == "", (name, out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["start", "--app", APP, "--type", "test.approved", "--data", "{label: x}"],
            "--data is not valid JSON",
        ),
        (
            ["start", "--app", APP, "--type", "test.approved", "--data", '{"label": 3}'],
            "--data does not fit PipeData: label: Input should be a valid string",
        ),
        (
            ["start", "--app", "no_such_module:registry", "--type", "t", "--data", "{}"],
            "--app 'no_such_module:registry': no module named 'no_such_module'",
        ),
        (
            ["start", "--app", "orchestrator_sagas:nothing", "--type", "t", "--data", "{}"],
            "module 'orchestrator_sagas' has no attribute 'nothing'",
        ),
        (
            ["start", "--app", APP, "--type", "no.such.type", "--data", "{}"],
            "no.such.type",
        ),
        (
            ["start", "--app", "cli_broken_app:registry", "--type", "t", "--data", "{}"],
            "importing 'cli_broken_app' failed with RuntimeError: the app is broken",
        ),
        (["approve", "s1", "w", "--by", "me", "--no-such-option"], "unrecognized arguments"),
    ],
)
def test_malformed_input_gets_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = _run(f"127.0.0.1:{_closed_port()}", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    if message == "unrecognized arguments":  # argparse: its usage, then one error line
        assert lines[0].startswith("usage: sagaline "), lines
        assert message in lines[-1] and "error:" in lines[-1], lines
    else:
        assert lines == [lines[0]] and lines[0].startswith("sagaline: error: "), lines


def test_debug_shows_the_traceback() -> None:
    args = ["start", "--app", APP, "--type", "test.approved", "--data", "{", "--debug"]
    result = _run(f"127.0.0.1:{_closed_port()}", *args)
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert "--data is not valid JSON" in result.stderr


def test_help_lists_the_exit_codes() -> None:
    result = _run("127.0.0.1:1", "approve", "--help")
    assert result.returncode == 0
    for code in ("3  Kafka did not answer", "5  the orchestrator knows no such saga"):
        assert code in result.stdout
