"""Least-privilege Kafka ACLs, one principal per role (created by ``sagaline topics ensure``).

Topics are matched by the topic prefix (``<prefix>.``); consumer groups and
transactional ids by their name prefix. What each role may do:

============  =============================================================================
client        write commands; read journal, state, deadletter and progress (verdicts,
              status, watch)
orchestrator  read commands, replies, state (restore) and the journal; write journal,
              state, tasks, deadletter and progress; its group and transactional ids
worker        read tasks; write replies, deadletter and progress; its group and
              transactional ids
relay         write replies
auditor       read every sagaline topic; write nothing
projection    read the journal; its group
console       read journal, state, deadletter and progress
============  =============================================================================

The data keys topic (``<prefix>.keys``): the client writes and reads it, the
orchestrator and the worker read it; erasing and re-wrapping take the admin.

Everything else is refused (``allow.everyone.if.no.acl.found=false``); only the
broker/controller principal ``admin`` is a super user.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.errors import TopicConfigError

__all__ = ["AclGroups", "acl_bindings", "ensure_acls"]

log = logging.getLogger(__name__)

_R, _W = AclOperation.READ, AclOperation.WRITE
_D, _DC = AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS


@dataclass(frozen=True)
class AclGroups:
    """Name prefixes of the consumer groups and transactional ids of each role."""

    orchestrator: str = "sagaline-orchestrator"
    worker: str = "sagaline-workers"
    projection: str = "sagaline-projection"
    #: assign-based readers (verdicts, status, audit, console) use throw-away group ids
    readers: str = "sagaline-"


def _topic(principal: str, topic: str, op: AclOperation) -> AclBinding:
    return AclBinding(
        ResourceType.TOPIC,
        topic,
        ResourcePatternType.LITERAL,
        f"User:{principal}",
        "*",
        op,
        AclPermissionType.ALLOW,
    )


def _prefixed(principal: str, kind: ResourceType, prefix: str, op: AclOperation) -> AclBinding:
    return AclBinding(
        kind,
        prefix,
        ResourcePatternType.PREFIXED,
        f"User:{principal}",
        "*",
        op,
        AclPermissionType.ALLOW,
    )


def _reads(principal: str, topics: Iterable[str]) -> list[AclBinding]:
    return [_topic(principal, t, op) for t in topics for op in (_R, _D, _DC)]


def _writes(principal: str, topics: Iterable[str]) -> list[AclBinding]:
    return [_topic(principal, t, op) for t in topics for op in (_W, _D)]


def _group(principal: str, prefix: str) -> list[AclBinding]:
    return [_prefixed(principal, ResourceType.GROUP, prefix, op) for op in (_R, _D)]


def _transactions(principal: str, prefix: str) -> list[AclBinding]:
    return [_prefixed(principal, ResourceType.TRANSACTIONAL_ID, prefix, op) for op in (_W, _D)]


def acl_bindings(names: TopicNames, groups: AclGroups | None = None) -> list[AclBinding]:
    """Every ALLOW binding of the role principals for the topics under ``names``."""
    g = groups or AclGroups()
    n = names
    keys = f"{n.prefix}.keys"
    bindings = [
        *_writes("client", [n.commands]),
        *_reads("client", [n.journal, n.state, n.deadletter, n.progress]),
        *_group("client", g.readers),
        *_reads("orchestrator", [n.commands, n.replies, n.state, n.journal]),
        *_writes("orchestrator", [n.journal, n.state, n.tasks, n.deadletter, n.progress]),
        *_group("orchestrator", g.orchestrator),
        *_transactions("orchestrator", g.orchestrator),
        *_reads("worker", [n.tasks]),
        *_writes("worker", [n.replies, n.deadletter, n.progress]),
        *_group("worker", g.worker),
        *_transactions("worker", g.worker),
        *_writes("relay", [n.replies]),
        *_reads("auditor", n.all()),
        *_group("auditor", g.readers),
        *_reads("projection", [n.journal]),
        *_group("projection", g.projection),
        *_reads("console", [n.journal, n.state, n.deadletter, n.progress]),
        *_group("console", g.readers),
        # data keys (runtime/data_keys.py): the client creates them; deciders, steps and
        # replay read them; only the admin erases (a tombstone) and re-wraps
        *_writes("client", [keys]),
        *_reads("client", [keys]),
        *_reads("orchestrator", [keys]),
        *_group("orchestrator", "sagaline-keys-"),
        *_reads("worker", [keys]),
        *_group("worker", "sagaline-keys-"),
    ]
    unique: dict[tuple[object, ...], AclBinding] = {}
    for b in bindings:  # e.g. DESCRIBE granted by both a read and a write
        unique.setdefault((b.restype, b.name, b.resource_pattern_type, b.principal, b.operation), b)
    return list(unique.values())


def ensure_acls(
    admin: AdminClient, names: TopicNames, groups: AclGroups | None = None, timeout: float = 15.0
) -> int:
    """Create the role ACLs for ``names`` (idempotent); returns how many bindings."""
    bindings = acl_bindings(names, groups)
    for binding, future in admin.create_acls(bindings, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            raise TopicConfigError(
                f"cannot create the ACL {binding.principal} {binding.operation} "
                f"{binding.name}: {exc.args[0].str()}"
            ) from None
    log.info("ensured %d ACL bindings for %s.*", len(bindings), names.prefix)
    return len(bindings)
