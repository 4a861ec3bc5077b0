"""Replay the journal: every saga's timeline, and a strict check against current code.

:func:`replay` reads the journal topic read-only (see
:mod:`sagaline.orchestrator.runtime.journal_reader`) and hands the entries to
the pure rules of :mod:`sagaline.orchestrator.core.replay_check` (re-exported
here): each saga's :class:`~sagaline.orchestrator.core.timeline.SagaTimeline`
and, with ``strict=True``, every recorded input re-decided with the *current*
saga definitions. A clean strict replay means the deployed code decides
exactly what the running sagas recorded, so it is safe to roll out;
``sagaline replay --strict`` exits 1 otherwise, which makes it a CI deploy gate.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sagaline.orchestrator.core.replay_check import (
    DefinitionLookup,
    Divergence,
    ReplayError,
    ReplayReport,
    check_saga,
    definition_lookup,
    event_diff,
    replay_entries,
)
from sagaline.orchestrator.runtime.data_keys import (
    DataKeyError,
    DataKeyStore,
    journal_keys_topic,
)
from sagaline.orchestrator.runtime.journal_reader import JournalRead, Progress, read_journal
from sagaline.orchestrator.runtime.loader import load_object
from sagaline.schemas.codec import RecordCodec

__all__ = [
    "DEFAULT_DEFINITIONS",
    "DefinitionLookup",
    "Divergence",
    "ReplayError",
    "ReplayReport",
    "check_saga",
    "definition_lookup",
    "event_diff",
    "load_definitions",
    "replay",
    "replay_entries",
]

log = logging.getLogger(__name__)

#: where ``sagaline replay --strict`` finds the saga definitions by default
DEFAULT_DEFINITIONS = "sagaline.sagas:REGISTRY"


def load_definitions(spec: str = DEFAULT_DEFINITIONS) -> DefinitionLookup:
    """Import ``module:attribute`` (say ``sagaline.sagas:REGISTRY``) as a definition lookup."""
    return definition_lookup(load_object(spec, option="--sagas", error=ReplayError))


def replay(
    bootstrap_servers: str,
    topic: str,
    *,
    saga_id: str | None = None,
    saga_type: str | None = None,
    since: datetime | None = None,
    strict: bool = False,
    definitions: DefinitionLookup | None = None,
    codec: RecordCodec | None = None,
    progress: Progress | None = None,
    timeout: float = 60.0,
    keys: DataKeyStore | None = None,
) -> ReplayReport:
    """Read the journal ``topic`` and replay it (see the module docstring).

    Personal fields are read with each saga's data key from ``keys`` (default: the
    keys topic beside ``topic``); the report lists the fields of erased sagas.  Where
    the keys cannot be read (no keys topic, a principal without access) the personal
    fields stay sealed and nothing is listed as erased."""
    if strict and definitions is None:
        definitions = load_definitions()
    read: JournalRead = read_journal(
        bootstrap_servers,
        topic,
        since=since,
        saga_id=saga_id,
        saga_type=saga_type,
        codec=codec,
        progress=progress,
        timeout=timeout,
    )
    own = keys or DataKeyStore(bootstrap_servers, journal_keys_topic(topic))
    try:
        store = _readable(own)
        return replay_entries(
            read.by_saga(),
            topic=topic,
            strict=strict,
            definitions=definitions,
            undecodable=read.undecodable,
            scopes=store.scope if store is not None else None,
        )
    finally:
        if keys is None:
            own.close()


def _readable(store: DataKeyStore) -> DataKeyStore | None:
    try:
        store.catch_up()
    except DataKeyError as exc:
        log.warning("personal fields stay sealed: %s", exc)
        return None
    return store
