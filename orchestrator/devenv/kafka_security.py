"""SASL/SCRAM-SHA-512 over TLS and KRaft's StandardAuthorizer for :class:`LocalKafka`.

Listeners (all on 127.0.0.1):

- ``SASL_SSL``: clients and replication, SCRAM-SHA-512 over TLS (the CA in
  :class:`StackCredentials`);
- ``CONTROLLER``: the KRaft quorum, SASL PLAIN over TLS with the ``admin`` principal
  only (SCRAM users live in the metadata log the controllers serve, so the quorum
  cannot use them).

``super.users`` is ``User:admin`` alone, the broker/controller principal; every other
principal gets exactly the ACLs ``sagaline topics ensure`` grants
(:mod:`sagaline.orchestrator.runtime.acls`).
"""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from sagaline.orchestrator.config import KafkaSecurity
from sagaline.orchestrator.devenv.credentials import ADMIN, StackCredentials
from sagaline.orchestrator.devenv.errors import StartupError
from sagaline.orchestrator.runtime.kafka_config import admin_config

__all__ = [
    "admin_security",
    "ensure_scram_users",
    "format_scram_args",
    "listener_properties",
]

_SCRAM_ITERATIONS = 8192


def admin_security(credentials: StackCredentials) -> KafkaSecurity:
    """The ``admin`` principal's client settings."""
    return KafkaSecurity(
        "SASL_SSL", ADMIN, credentials.kafka_passwords[ADMIN], str(credentials.ca_file)
    )


def listener_properties(
    credentials: StackCredentials, broker_port: int, controller_port: int, host: str
) -> dict[str, str]:
    """The server.properties entries of a secured node (they hold the admin password:
    the file is written owner-only)."""
    password = credentials.kafka_passwords[ADMIN]
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{ADMIN}" password="{password}" user_{ADMIN}="{password}";'
    )
    scram = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN}" password="{password}";'
    )
    return {
        "listeners": f"SASL_SSL://{host}:{broker_port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{host}:{broker_port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(credentials.server_pem),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(credentials.ca_file),
        "ssl.endpoint.identification.algorithm": "https",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN}",
        "allow.everyone.if.no.acl.found": "false",
    }


def format_scram_args(credentials: StackCredentials) -> list[str]:
    """``kafka-storage format`` arguments that create the admin's SCRAM credential
    (replication needs it before any client can add users)."""
    password = credentials.kafka_passwords[ADMIN]
    return ["--add-scram", f"SCRAM-SHA-512=[name={ADMIN},password={password}]"]


def ensure_scram_users(bootstrap_servers: str, credentials: StackCredentials) -> None:
    """Create or update (rotate) every role's SCRAM-SHA-512 credential, as ``admin``."""
    admin = AdminClient(
        admin_config(
            bootstrap_servers,
            extra={**admin_security(credentials).client_config(), "log_level": 0},
        )
    )
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(
            user,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, _SCRAM_ITERATIONS),
            password.encode("utf-8"),
        )
        for user, password in sorted(credentials.kafka_passwords.items())
        if user != ADMIN
    ]
    for user, future in admin.alter_user_scram_credentials(upserts).items():
        try:
            future.result()
        except KafkaException as exc:
            # the message names the user and the error code, never the password
            raise StartupError(
                f"cannot create the Kafka user {user}: {exc.args[0].str()}"
            ) from None
