"""The orchestrator's configuration, clients, counters and per-transaction staging."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError
from opentelemetry.trace import Link

from sagaline.orchestrator.runtime.kafka_config import (
    ConfigValue,
    input_consumer_config,
    reader_config,
    transactional_producer_config,
)
from sagaline.orchestrator.runtime.ports import Codec, SagaLogic
from sagaline.orchestrator.runtime.snapshots import LazySnapshot
from sagaline.orchestrator.runtime.timers import DueTimer
from sagaline.orchestrator.runtime.transactions import Produce, TransactionalProducer
from sagaline.schemas.base import Record

__all__ = ["Batch", "EngineConfig", "EngineStats", "PartitionState", "make_clients"]


@dataclass(frozen=True)
class EngineConfig:
    """Tuning of one orchestrator process."""

    instance_id: str
    group_id: str = "sagaline-orchestrator"
    #: most inputs decided in one transaction
    max_batch: int = 500
    #: extra time to wait for more inputs once one arrived (0 = take what is there)
    linger_ms: float = 0.0
    #: longest blocking poll while idle (timers are checked at least this often)
    max_idle_s: float = 0.5
    #: how long a finished saga's terminal snapshot stays before its tombstone
    tombstone_grace_s: float = 86_400.0
    transaction_timeout_ms: int = 30_000
    producer_linger_ms: float = 0.5
    #: broker-side long poll of a fetch that finds nothing: a commit answers it at once
    #: (read_committed) and an idle broker is not kept answering empty fetches; costs at
    #: most one such wait before the first records after an assignment, and before the
    #: end of a partition is reported after its last record (which due timers wait for)
    fetch_wait_max_ms: int = 100
    session_timeout_ms: int = 10_000
    #: ``group.instance.id`` = instance id: a restarted instance gets its partitions back at once
    static_membership: bool = True
    restore_timeout_s: float = 120.0
    #: how often the partition counts are checked while running (a change stops the process)
    partition_check_s: float = 30.0
    producer_extra: Mapping[str, ConfigValue] = field(default_factory=dict)
    consumer_extra: Mapping[str, ConfigValue] = field(default_factory=dict)

    @property
    def transactional_id(self) -> str:
        """Stable per instance, so a restarted instance fences its own zombie."""
        return f"{self.group_id}-{self.instance_id}"


@dataclass
class EngineStats:
    """Counters (monotonic over the process lifetime)."""

    batches: int = 0
    inputs: int = 0
    decisions: int = 0
    timers_fired: int = 0
    dead_letters: int = 0
    tombstones: int = 0
    aborted_batches: int = 0
    #: transactional producers replaced after a fatal error (each followed by a full restore)
    producers_recreated: int = 0
    restored_sagas: int = 0
    rebalances: int = 0
    #: wall time spent deciding (decode, decide, encode) and committing, in seconds
    decide_seconds: float = 0.0
    commit_seconds: float = 0.0


@dataclass
class PartitionState:
    """The sagas of one owned state partition."""

    #: active sagas: decoded, or as restore read them (loaded at first use)
    active: dict[str, Record | LazySnapshot] = field(default_factory=dict)
    finished: dict[str, Record] = field(default_factory=dict)

    def state(self, saga_id: str, codec: Codec, logic: SagaLogic) -> Record | None:
        """A saga's state; a snapshot restore left unread is decoded now and kept decoded."""
        found = self.active.get(saga_id)
        if not isinstance(found, LazySnapshot):
            return found if found is not None else self.finished.get(saga_id)
        loaded = self.active[saga_id] = found.load(codec, logic)
        return loaded


@dataclass
class Batch:
    """What one transaction stages before it commits."""

    overlay: dict[str, Record] = field(default_factory=dict)
    partition_of: dict[str, int] = field(default_factory=dict)
    produces: list[Produce] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    fired: list[DueTimer] = field(default_factory=list)
    #: every timer decided, dead-lettered or skipped in this batch (for AbortPolicy)
    timer_keys: list[tuple[str, str | int, str | int]] = field(default_factory=list)
    tombstoned: list[tuple[str, int]] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    inputs: int = 0
    decisions: int = 0
    timers: int = 0
    dead_letters: int = 0
    #: decisions get spans (``telemetry.records_spans``: an SDK tracer is installed)
    traced: bool = True


def make_clients(
    config: EngineConfig, bootstrap: str, on_consumer_error: Callable[[KafkaError], None]
) -> tuple[TransactionalProducer, Consumer, Consumer]:
    """The transactional producer, the input consumer and the restore reader of one engine."""
    producer = TransactionalProducer(
        transactional_producer_config(
            bootstrap,
            config.transactional_id,
            linger_ms=config.producer_linger_ms,
            transaction_timeout_ms=config.transaction_timeout_ms,
            extra=config.producer_extra,
        )
    )
    consumer = Consumer(
        input_consumer_config(
            bootstrap,
            config.group_id,
            instance_id=config.instance_id,
            fetch_wait_max_ms=config.fetch_wait_max_ms,
            session_timeout_ms=config.session_timeout_ms,
            static_membership=config.static_membership,
            extra={"error_cb": on_consumer_error, **config.consumer_extra},
        )
    )
    reader = Consumer(reader_config(bootstrap, f"{config.group_id}-restore-{config.instance_id}"))
    return producer, consumer, reader
