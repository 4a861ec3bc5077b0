"""Kafka (apache/kafka, KRaft) and PostgreSQL in Docker through testcontainers.

Used by the test fixtures when a Docker engine answers; the images match
``infra/compose.yaml``. testcontainers is imported lazily so that nothing else
depends on it.
"""

from __future__ import annotations

from typing import Any

from sagaline.orchestrator.devenv.kafka_dist import kafka_version
from sagaline.orchestrator.devenv.ports import free_port
from sagaline.orchestrator.devenv.readiness import wait_for_kafka, wait_for_postgres

__all__ = ["POSTGRES_IMAGE", "KafkaInDocker", "PostgresInDocker", "kafka_image"]

POSTGRES_IMAGE = "postgres:15"


def kafka_image() -> str:
    """``apache/kafka:<the pinned version>``."""
    return f"apache/kafka:{kafka_version()}"


class KafkaInDocker:
    """A single-node KRaft broker in a container, advertised on a fixed host port."""

    def __init__(self, image: str | None = None) -> None:
        self.image = image or kafka_image()
        self.port = free_port()
        self._container: Any = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> float:
        from testcontainers.core.container import DockerContainer

        port = self.port
        env = {
            "KAFKA_NODE_ID": "1",
            "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
            "KAFKA_LISTENERS": f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://localhost:9093",
            "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
            "KAFKA_NUM_PARTITIONS": "1",
        }
        container = DockerContainer(self.image).with_bind_ports(port, port)
        for key, value in env.items():
            container = container.with_env(key, value)
        self._container = container.start()
        return wait_for_kafka(self.bootstrap_servers, timeout=timeout)

    def stop(self) -> None:
        if self._container is not None:
            self._container.stop()
            self._container = None


class PostgresInDocker:
    """PostgreSQL in a container with trust auth and the ``sagaline`` database."""

    def __init__(self, image: str = POSTGRES_IMAGE, database: str = "sagaline") -> None:
        self.image = image
        self.database = database
        self._container: Any = None
        self.url = ""

    def start(self, timeout: float = 120.0) -> float:
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer(
            self.image,
            username="postgres",
            password="postgres",  # noqa: S106 - throw-away test container
            dbname=self.database,
        )
        self._container = container.start()
        host = self._container.get_container_host_ip()
        port = self._container.get_exposed_port(5432)
        self.url = f"postgresql://postgres:postgres@{host}:{port}/{self.database}"
        return wait_for_postgres(self.url, timeout=timeout)

    def stop(self) -> None:
        if self._container is not None:
            self._container.stop()
            self._container = None
