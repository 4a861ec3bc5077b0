"""Fork a saga: read its journal, plan the fork (pure core), send its start.

``sagaline fork SAGA --from-step NAME`` and :func:`fork_saga` start a new
saga with the same input whose history copies the source's up to the step;
the orchestrator decides it (see :mod:`sagaline.orchestrator.core.fork`).
The start's message id derives from the new id, the source and the step, so
sending it again (after a crash, say) starts nothing twice.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from sagaline.orchestrator.client.errors import SagaNotFound
from sagaline.orchestrator.client.saga_client import SagaClient, SagaHandle
from sagaline.orchestrator.core.fork import plan_fork
from sagaline.orchestrator.runtime.journal_reader import read_journal

__all__ = ["fork_saga"]


def fork_saga(
    client: SagaClient,
    saga_id: str,
    from_step: str,
    *,
    version: int | None = None,
    new_saga_id: str | None = None,
    requested_by: str | None = None,
    timeout: float = 60.0,
) -> SagaHandle:
    """Start a fork of ``saga_id`` from ``from_step`` under ``version`` (default: the
    source's) as ``new_saga_id`` (default: ``<saga_id>.fork-<8 hex digits>``)."""
    settings = client.settings
    read = read_journal(
        settings.kafka_bootstrap_servers, settings.topics.journal, saga_id=saga_id, timeout=timeout
    )
    entries = read.by_saga().get(saga_id, [])
    if not entries:
        raise SagaNotFound(f"no journal of saga {saga_id!r} on {settings.topics.journal}")
    sid = new_saga_id or f"{saga_id}.fork-{uuid.uuid4().hex[:8]}"
    command = plan_fork(
        entries,
        from_step,
        saga_id=sid,
        version=version or entries[0].envelope.saga_version,
        now=datetime.now(UTC),
        requested_by=requested_by or client.client_id,
    )
    sent_ms = int(time.time() * 1000)
    receipt = client._sent(command, sid)  # the client package's own helper
    return SagaHandle(client, sid, command.envelope.saga_type, receipt, sent_ms)
