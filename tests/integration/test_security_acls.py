"""Authenticated transport and least-privilege ACLs, on the session's real (secured) Kafka.

``ensure_topics`` (what ``sagaline topics ensure`` runs, as ``admin``) grants each role
principal its ACLs; every other write is refused by the broker's StandardAuthorizer.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from sagaline.orchestrator.config import KafkaSecurity, TopicNames, kafka_security_from_env
from sagaline.orchestrator.devenv.credentials import StackCredentials
from sagaline.orchestrator.runtime.kafka_config import (
    admin_config,
    client_producer_config,
    reader_config,
    transactional_producer_config,
)
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def secured(session_credentials: StackCredentials | None, kafka_bootstrap: str) -> KafkaSecurity:
    if session_credentials is None or not kafka_security_from_env().secured:
        pytest.skip("the session's Kafka is not secured (SAGALINE_TEST_SECURITY=0)")
    return kafka_security_from_env()


def _as(security: KafkaSecurity, credentials: StackCredentials, role: str) -> dict[str, str]:
    return security.as_user(role, credentials.kafka_passwords[role]).client_config()


def _write(bootstrap: str, principal: dict[str, str], topic: str) -> KafkaError | None:
    """Produce one record as ``principal``; the delivery error (None when accepted)."""
    errors: list[KafkaError | None] = []
    producer = Producer(
        client_producer_config(
            bootstrap,
            extra={
                **principal,
                "enable.idempotence": False,
                "message.timeout.ms": 15_000,
                "log_level": 0,
            },
        )
    )
    producer.produce(topic, key=b"k", value=b"forged", on_delivery=lambda e, _m: errors.append(e))
    producer.flush(20)
    assert errors, f"no delivery report for {topic} within 20 s"
    return errors[0]


def _refused(error: KafkaError | None) -> bool:
    return error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


@pytest.fixture
def names(secured: KafkaSecurity, kafka_bootstrap: str, topic_prefix: str) -> TopicNames:
    topics = TopicNames(topic_prefix)
    ensure_topics(kafka_bootstrap, topics, TopicLayout(partitions=1))
    return topics


def test_each_role_writes_only_what_it_may(
    kafka_bootstrap: str,
    names: TopicNames,
    secured: KafkaSecurity,
    session_credentials: StackCredentials,
) -> None:
    creds = session_credentials

    def role(name: str) -> dict[str, str]:
        return _as(secured, creds, name)

    # the refusals the issue names, plus the forgeries it describes
    assert _refused(_write(kafka_bootstrap, role("worker"), names.journal))
    assert _refused(_write(kafka_bootstrap, role("worker"), names.tasks))  # forged CompensateStep
    assert _refused(_write(kafka_bootstrap, role("client"), names.replies))  # forged StepSucceeded
    assert _refused(_write(kafka_bootstrap, role("client"), names.state))  # tombstone
    assert _refused(_write(kafka_bootstrap, role("relay"), names.journal))
    for topic in names.all():
        assert _refused(_write(kafka_bootstrap, role("auditor"), topic)), topic
    # and what each role is for still works
    assert _write(kafka_bootstrap, role("client"), names.commands) is None
    assert _write(kafka_bootstrap, role("worker"), names.replies) is None
    assert _write(kafka_bootstrap, role("relay"), names.replies) is None


def test_only_the_orchestrator_writes_the_journal_in_its_transactions(
    kafka_bootstrap: str,
    names: TopicNames,
    secured: KafkaSecurity,
    session_credentials: StackCredentials,
) -> None:
    orchestrator = _as(secured, session_credentials, "orchestrator")
    producer = Producer(
        transactional_producer_config(
            kafka_bootstrap, f"sagaline-orchestrator-{uuid.uuid4().hex[:6]}", extra=orchestrator
        )
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(names.journal, key=b"s-1", value=b"entry")
    producer.commit_transaction(30)
    # a worker may not borrow the orchestrator's transactional ids
    worker = _as(secured, session_credentials, "worker")
    thief = Producer(
        transactional_producer_config(
            kafka_bootstrap, f"sagaline-orchestrator-{uuid.uuid4().hex[:6]}", extra=worker
        )
    )
    with pytest.raises(KafkaException) as refused:
        thief.init_transactions(30)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    # the auditor reads what the orchestrator wrote
    auditor = _as(secured, session_credentials, "auditor")
    reader = Consumer(
        reader_config(kafka_bootstrap, f"sagaline-audit-{uuid.uuid4().hex}", extra=auditor)
    )
    try:
        reader.assign([TopicPartition(names.journal, 0, 0)])
        message = None
        for _ in range(60):
            message = reader.poll(0.5)
            if message is not None and message.error() is None:
                break
        assert message is not None and message.error() is None
        assert message.value() == b"entry"
    finally:
        reader.close()


def test_wrong_password_and_plaintext_are_refused(
    kafka_bootstrap: str, secured: KafkaSecurity
) -> None:
    wrong = secured.as_user("worker", "not-the-password").client_config()
    admin = AdminClient(admin_config(kafka_bootstrap, extra={**wrong, "log_level": 0}))
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    plain = AdminClient(
        admin_config(kafka_bootstrap, extra={"security.protocol": "PLAINTEXT", "log_level": 0})
    )
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=5)
