"""The orchestrator, a worker and the outbox relay in threads of the test process.

For a ``with`` block: started on entry, stopped and joined on exit.  An
exception that ends one of the threads is kept in ``errors`` and fails the
block at its exit (when the block itself did not fail).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

from sagaline.consumers.handlers import RegistryResolver
from sagaline.consumers.relay import Relay, RelayOptions
from sagaline.consumers.worker import Worker, WorkerOptions
from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.engine import EngineConfig, Orchestrator


class ThreadedStack:
    """Orchestrator, worker and relay of ``registry`` in threads, for a ``with`` block.

    ``database_url`` None: a Kafka-only worker and no relay.  ``worker`` replaces
    the default worker options (group ``<prefix>-workers``, ``schema``);
    ``orchestrator=False`` leaves the orchestrator to the test (e.g. as a
    subprocess it can SIGKILL).  The orchestrator's group is ``<prefix>-orch``.
    """

    def __init__(
        self,
        settings: Settings,
        registry: SagaRegistry,
        database_url: str | None,
        schema: str = "sagaline",
        *,
        orchestrator: bool = True,
        instance_id: str = "a",
        worker: WorkerOptions | None = None,
        relay_poll_interval: float = 0.2,
    ) -> None:
        prefix = settings.topics.prefix
        config = EngineConfig(instance_id=instance_id, group_id=f"{prefix}-orch")
        self.orch = Orchestrator(settings, CoreLogic(registry), config, codec=AvroCodec())
        self.worker = Worker(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            database_url=database_url,
            topics=settings.topics,
            resolver=RegistryResolver(registry),
            options=worker or WorkerOptions(group_id=f"{prefix}-workers", schema=schema),
        )
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [self._thread(lambda: self.worker.run(self.stop))]
        self.relay: Relay | None = None
        if database_url is not None:
            relay = Relay(
                database_url,
                settings.kafka_bootstrap_servers,
                RelayOptions(schema=schema, poll_interval=relay_poll_interval),
            )
            self.relay = relay
            self.threads.append(self._thread(lambda: relay.run(self.stop)))
        if orchestrator:
            self.threads.append(self._thread(self.orch.run))

    def _thread(self, target: Callable[[], object]) -> threading.Thread:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                self.errors.append(exc)

        return threading.Thread(target=run, daemon=True)

    def __enter__(self) -> ThreadedStack:
        for t in self.threads:
            t.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.orch.request_stop()
        self.stop.set()
        for t in self.threads:
            t.join(30)
        if self.relay is not None:
            self.relay.close()
        if exc_type is None and self.errors:
            raise AssertionError(f"a stack thread failed: {self.errors[0]!r}") from self.errors[0]
