"""Which Kafka/PostgreSQL a test session uses, and the Docker probe behind that choice."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from sagaline.orchestrator.devenv.docker import docker_available
from sagaline.orchestrator.devenv.kafka_dist import kafka_version
from sagaline.orchestrator.devenv.provision import SessionInfra, Source, choose_source

pytestmark = pytest.mark.unit


def _explode() -> bool:
    raise AssertionError("the Docker probe must not run when a value is explicit")


def test_explicit_value_wins_without_probing_docker() -> None:
    assert choose_source("127.0.0.1:9092", _explode) is Source.ENV


def test_docker_is_used_when_it_answers_and_local_processes_otherwise() -> None:
    assert choose_source(None, lambda: True) is Source.DOCKER
    assert choose_source("", lambda: False) is Source.LOCAL


def test_session_infra_returns_explicit_settings_and_starts_nothing() -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "10.0.0.1:9092",
        "DATABASE_URL": "postgresql://u@10.0.0.2:5432/db",
    }
    infra = SessionInfra(env, docker_probe=_explode)
    try:
        infra.prepare(kafka=True, postgres=True)
        assert infra.kafka_bootstrap() == "10.0.0.1:9092"
        assert infra.database_url() == "postgresql://u@10.0.0.2:5432/db"
        assert infra.sources == {"kafka": Source.ENV, "postgres": Source.ENV}
    finally:
        infra.close()


def test_docker_probe_runs_once_per_session_and_can_be_switched_off() -> None:
    calls: list[int] = []

    def probe() -> bool:
        calls.append(1)
        return False

    infra = SessionInfra({}, docker_probe=probe)
    assert infra._docker_answers() is False
    assert infra._docker_answers() is False
    assert calls == [1]
    infra.close()

    switched_off = SessionInfra({"SAGALINE_TEST_DOCKER": "0"}, docker_probe=_explode)
    assert switched_off._docker_answers() is False
    switched_off.close()


def test_docker_probe_is_false_for_a_missing_socket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    assert docker_available(timeout=0.2) is False


def _serve_once(path: Path, reply: bytes) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", True),
        (b"HTTP/1.1 500 Internal Server Error\r\n\r\n", False),
    ],
)
def test_docker_probe_reads_the_ping_status(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reply: bytes, expected: bool
) -> None:
    sock = tmp_path / "d.sock"
    thread = _serve_once(sock, reply)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    assert docker_available(timeout=2.0) is expected
    thread.join(5)


def test_kafka_version_is_pinned_in_the_maven_project() -> None:
    version = kafka_version()
    major, minor, patch = (int(part) for part in version.split("."))
    assert major == 4 and minor >= 1 and patch >= 0


def test_a_server_port_is_chosen_below_the_ephemeral_range() -> None:
    """An outgoing connection never takes it as its local port while the server starts
    (a test session failed when PostgreSQL found its chosen port so taken)."""
    from sagaline.orchestrator.devenv.ports import _ephemeral_low, free_port, port_is_free

    low = _ephemeral_low()
    ports = {free_port() for _ in range(20)}
    assert all(port_is_free(p) for p in ports)
    if low - 12_000 >= 1024:
        assert all(low - 12_000 <= p < low for p in ports)
