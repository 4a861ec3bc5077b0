"""Local Apache Kafka (KRaft) and PostgreSQL processes for development and tests.

- :class:`LocalKafka`: 1 or 3 broker+controller JVMs from Maven Central jars;
- :class:`LocalPostgres`: a private cluster of Debian's PostgreSQL;
- :class:`DevStack`: both, behind ``sagaline dev up | down | status``;
- :class:`SessionInfra`: the test session's servers (environment, Docker, or local).
"""

from orchestrator.devenv.errors import DevEnvError, MissingToolError, PortInUseError, StartupError
from orchestrator.devenv.kafka import LocalKafka
from orchestrator.devenv.kafka_dist import ensure_kafka_distribution, kafka_version
from orchestrator.devenv.postgres import LocalPostgres
from orchestrator.devenv.postgres_dist import ensure_postgres_binaries
from orchestrator.devenv.provision import SessionInfra
from orchestrator.devenv.stack import DevStack

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
