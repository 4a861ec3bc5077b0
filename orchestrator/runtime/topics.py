"""Declare, create and verify sagaline's topics.

commands, replies and state must have the same partition count (a saga's
inputs and its state snapshot share the partition number); the state topic
is compacted with segment settings that keep restore short; the journal is
kept forever.

On a secured cluster, creating (``create=True``) also grants the role principals their
least-privilege ACLs (:mod:`sagaline.orchestrator.runtime.acls`); that takes the admin
principal, as ``sagaline topics ensure`` runs by default.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.acls import ensure_acls
from sagaline.orchestrator.runtime.errors import TopicConfigError
from sagaline.orchestrator.runtime.kafka_config import admin_config, security_config

__all__ = [
    "TopicLayout",
    "TopicSpec",
    "ensure_topics",
    "partition_count",
    "topic_specs",
    "verify_topics",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """One topic: name, partitions, replication and the configs that must hold."""

    name: str
    partitions: int
    replication: int = 1
    config: Mapping[str, str] = field(default_factory=dict)
    #: config keys whose value is verified on an existing topic
    required: tuple[str, ...] = ()
    #: advisory (progress): created by ``ensure``, but a missing one does not stop a start
    optional: bool = False


@dataclass(frozen=True)
class TopicLayout:
    """Partition counts and the state topic's compaction settings."""

    partitions: int = 6
    replication: int = 1
    state_segment_ms: int = 3_600_000
    state_min_cleanable_dirty_ratio: float = 0.1
    state_delete_retention_ms: int = 86_400_000
    #: progress is advisory and only of interest while a saga runs: kept one hour
    progress_retention_ms: int = 3_600_000
    #: an erased data key leaves the keys topic's log about this long after its tombstone
    #: (segment roll, max compaction lag, tombstone retention; plus the cleaner's backoff)
    keys_compaction_ms: int = 60_000


def topic_specs(names: TopicNames, layout: TopicLayout | None = None) -> tuple[TopicSpec, ...]:
    """The full set of sagaline topics under ``names.prefix``."""
    lay = layout or TopicLayout()
    n, rf = lay.partitions, lay.replication
    delete = {"cleanup.policy": "delete"}
    return (
        TopicSpec(names.commands, n, rf, delete),
        TopicSpec(names.replies, n, rf, delete),
        TopicSpec(names.tasks, n, rf, delete),
        TopicSpec(
            names.state,
            n,
            rf,
            {
                "cleanup.policy": "compact",
                "segment.ms": str(lay.state_segment_ms),
                "min.cleanable.dirty.ratio": str(lay.state_min_cleanable_dirty_ratio),
                "delete.retention.ms": str(lay.state_delete_retention_ms),
            },
            required=("cleanup.policy",),
        ),
        TopicSpec(
            names.journal,
            n,
            rf,
            {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"},
            required=("cleanup.policy", "retention.ms", "retention.bytes"),
        ),
        TopicSpec(names.deadletter, 1, rf, {"cleanup.policy": "delete", "retention.ms": "-1"}),
        TopicSpec(
            names.progress,
            n,
            rf,
            {"cleanup.policy": "delete", "retention.ms": str(lay.progress_retention_ms)},
            optional=True,
        ),
        TopicSpec(
            f"{names.prefix}.keys",  # wrapped data keys (runtime/data_keys.py)
            n,
            rf,
            {
                "cleanup.policy": "compact",
                "segment.ms": str(lay.keys_compaction_ms),
                "max.compaction.lag.ms": str(lay.keys_compaction_ms),
                "min.compaction.lag.ms": "0",
                "min.cleanable.dirty.ratio": "0.01",
                "delete.retention.ms": str(lay.keys_compaction_ms),
            },
            required=("cleanup.policy",),
            optional=True,
        ),
    )


def _existing_partitions(admin: AdminClient, timeout: float) -> dict[str, int]:
    metadata = admin.list_topics(timeout=timeout)
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if topic.error is None
    }


def _create(admin: AdminClient, specs: Iterable[TopicSpec], timeout: float) -> None:
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=s.replication,
            config=dict(s.config),
        )
        for s in specs
    ]
    if not new:
        return
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
            log.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise TopicConfigError(f"cannot create topic {name}: {exc}") from exc


def _wait_for_metadata(admin: AdminClient, topics: list[str], timeout: float) -> None:
    """Wait until freshly created topics show up with a leader for every partition."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=timeout)
        if all(
            name in metadata.topics
            and metadata.topics[name].error is None
            and all(p.leader >= 0 for p in metadata.topics[name].partitions.values())
            for name in topics
        ):
            return
        time.sleep(0.1)


def verify_topics(
    admin: AdminClient, specs: tuple[TopicSpec, ...], names: TopicNames, timeout: float = 15.0
) -> None:
    """Check existence, co-partitioning and required configs; raise ``TopicConfigError``."""
    existing = _existing_partitions(admin, timeout)
    copartitioned = {
        t: existing[t] for t in (names.commands, names.replies, names.state) if t in existing
    }
    if len(set(copartitioned.values())) > 1:
        detail = ", ".join(f"{t}={p}" for t, p in copartitioned.items())
        raise TopicConfigError(
            "commands, replies and state must have the same partition count "
            f"(co-partitioned by saga id), found {detail}; refusing to start"
        )
    absent = [s for s in specs if s.name not in existing]
    for spec in absent:
        if spec.optional:
            log.warning(
                "optional topic %s is missing; `sagaline topics ensure` creates it", spec.name
            )
    missing = [s.name for s in absent if not s.optional]
    if missing:
        raise _TopicsMissing(
            f"missing topics: {', '.join(missing)}; run `sagaline topics ensure` first"
        )
    resources = [ConfigResource("topic", s.name) for s in specs if s.required and s not in absent]
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        actual = future.result()
        spec = next(s for s in specs if s.name == resource.name)
        for key in spec.required:
            entry = actual.get(key)
            value = entry.value if entry is not None else None
            if value != spec.config[key]:
                raise TopicConfigError(
                    f"topic {spec.name} has {key}={value}, expected {spec.config[key]}"
                )


def ensure_topics(
    bootstrap_servers: str,
    names: TopicNames,
    layout: TopicLayout | None = None,
    *,
    create: bool = True,
    timeout: float = 15.0,
) -> tuple[TopicSpec, ...]:
    """Create the missing topics (when ``create``), then verify all of them."""
    specs = topic_specs(names, layout)
    admin = AdminClient(admin_config(bootstrap_servers))
    if create:
        existing = _existing_partitions(admin, timeout)
        copartitioned = {
            existing[t] for t in (names.commands, names.replies, names.state) if t in existing
        }
        if len(copartitioned) <= 1:
            _create(admin, [s for s in specs if s.name not in existing], timeout)
            _wait_for_metadata(admin, [s.name for s in specs], timeout)
        if security_config():
            ensure_acls(admin, names, timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            verify_topics(admin, specs, names, timeout)
            return specs
        except _TopicsMissing:
            # just created: the broker that answered this metadata request may not have
            # applied them yet (another one showed them to _wait_for_metadata)
            if not create or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class _TopicsMissing(TopicConfigError):
    """Required topics are not in the metadata a broker returned."""


def partition_count(bootstrap_servers: str, topic: str, timeout: float = 10.0) -> int:
    """How many partitions ``topic`` has (``TopicConfigError`` if it does not exist)."""
    admin = AdminClient(admin_config(bootstrap_servers))
    existing = _existing_partitions(admin, timeout)
    if topic not in existing:
        raise TopicConfigError(f"topic {topic} does not exist")
    return existing[topic]
