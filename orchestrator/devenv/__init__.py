"""Local Apache Kafka (KRaft) and PostgreSQL processes for development and tests.

- :class:`LocalKafka`: 1 or 3 broker+controller JVMs from Maven Central jars;
- :class:`LocalPostgres`: a private cluster of Debian's PostgreSQL;
- :class:`DevStack`: both, behind ``sagaline dev up | down | status``;
- :class:`SessionInfra`: the test session's servers (environment, Docker, or local).
"""

from sagaline.orchestrator.devenv.errors import (
    DevEnvError,
    MissingToolError,
    PortInUseError,
    StartupError,
)
from sagaline.orchestrator.devenv.kafka import LocalKafka
from sagaline.orchestrator.devenv.kafka_dist import ensure_kafka_distribution, kafka_version
from sagaline.orchestrator.devenv.postgres import LocalPostgres
from sagaline.orchestrator.devenv.postgres_dist import ensure_postgres_binaries
from sagaline.orchestrator.devenv.provision import SessionInfra
from sagaline.orchestrator.devenv.stack import DevStack

__all__ = [
    "DevEnvError",
    "DevStack",
    "LocalKafka",
    "LocalPostgres",
    "MissingToolError",
    "PortInUseError",
    "SessionInfra",
    "StartupError",
    "ensure_kafka_distribution",
    "ensure_postgres_binaries",
    "kafka_version",
]
