"""The topics steps send their tasks to with ``to=``: checked when an orchestrator starts.

A step declared ``@step(to="payments.tasks")`` publishes its tasks to that topic
in the orchestrator's transactions.  Kafka refuses a record for a topic that does
not exist (or that this principal may not write) only at commit: the transaction
aborts, and after :data:`~sagaline.orchestrator.runtime.transactions.SUSPECT_AFTER`
aborts in a row the input is dead-lettered.  That is the right end for a topic that
stays missing (a broker with ``auto.create.topics.enable`` creates it instead, with
its default settings, at first use), but a user should hear of it when the process
starts, not from the dead letters or a topic made with the wrong settings:
:func:`check_step_topics` names every missing topic and the steps that use it in a
warning.  It does not refuse to start: the topic may be
created by the team that runs those workers, and the sagas that do not use it
run meanwhile.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.runtime.kafka_config import admin_config
from sagaline.orchestrator.runtime.transactions import SUSPECT_AFTER

__all__ = ["check_step_topics", "step_topics"]

log = logging.getLogger("sagaline.orchestrator.topics")

#: destinations that name this deployment's own topics (checked by ``ensure_topics``)
_OURS = frozenset({"tasks", "commands", "replies"})


def step_topics(logic: object) -> dict[str, list[str]]:
    """``{topic: ["saga_type v1: step", ...]}`` for every step that declares ``to=``
    (none when ``logic`` is not built on a :class:`SagaRegistry`)."""
    registry = getattr(logic, "registry", logic)
    found: dict[str, list[str]] = {}
    if not isinstance(registry, SagaRegistry):
        return found
    for definition in registry:
        for name, node in definition.nodes.items():
            topic = getattr(node, "to", None)
            if isinstance(topic, str) and topic and topic not in _OURS:
                where = f"{definition.type_name} v{definition.version}: {name}"
                found.setdefault(topic, []).append(where)
    return found


def check_step_topics(bootstrap_servers: str, logic: object, timeout: float = 10.0) -> list[str]:
    """Warn about each ``to=`` topic that does not exist; returns them (sorted)."""
    wanted = step_topics(logic)
    if not wanted:
        return []
    try:
        metadata = AdminClient(admin_config(bootstrap_servers)).list_topics(timeout=timeout)
    except KafkaException as exc:
        log.warning("could not check the steps' to= topics %s: %s", sorted(wanted), exc)
        return []
    missing = sorted(
        topic
        for topic in wanted
        if topic not in metadata.topics or metadata.topics[topic].error is not None
    )
    for topic in missing:
        log.warning(
            "topic %r does not exist (or this principal may not see it), and %s send their "
            "tasks to it (to=): a broker with auto.create.topics.enable creates it at first "
            "use with its default settings; otherwise, until it is there, each such task's "
            "input is dead-lettered after %d aborted transactions",
            topic,
            "; ".join(wanted[topic]),
            SUSPECT_AFTER,
        )
    return missing
