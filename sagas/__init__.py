"""Reference agent sagas: refund with manager approval, research agent, lead enrichment.

``REGISTRY`` is what ``sagaline worker run --app sagaline.sagas:REGISTRY`` loads;
``APP`` (the same sagas and the daily digest's schedule) is what
``sagaline orchestrator run --app sagaline.sagas:APP`` loads.  The sagas keep their business
tables in the application schema (:mod:`sagaline.sagas.tables`); create them with
:func:`sagaline.sagas.tables.ensure_tables`.
"""

from __future__ import annotations

from typing import Any

from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga
from sagaline.sagas.digest import DAILY_DIGEST, DEMO_DIGEST, DailyDigest
from sagaline.sagas.enrichment import LeadEnrichment
from sagaline.sagas.refund import DemoRefundAgent, RefundAgent, RefundAgentV1
from sagaline.sagas.research import ResearchAgent, ResearchAgentV1

__all__ = [
    "APP",
    "DAILY_DIGEST",
    "DEMO_APP",
    "REGISTRY",
    "SAGAS",
    "DailyDigest",
    "DemoRefundAgent",
    "LeadEnrichment",
    "RefundAgent",
    "RefundAgentV1",
    "ResearchAgent",
    "ResearchAgentV1",
]

#: every version that may still have sagas in flight (RefundAgentV1, ResearchAgentV1: the
#: versions before bound approvals and model fallback; new sagas start at the latest)
SAGAS: list[type[Saga[Any]]] = [
    RefundAgent,
    RefundAgentV1,
    DemoRefundAgent,
    ResearchAgent,
    ResearchAgentV1,
    LeadEnrichment,
    DailyDigest,
]
REGISTRY = SagaRegistry(SAGAS)
#: the orchestrator's ``--app``: the sagas and the daily digest's schedule
APP = [*SAGAS, DAILY_DIGEST]
#: ``sagaline demo``'s orchestrator: the digest every five seconds instead of every morning
DEMO_APP = [*SAGAS, DEMO_DIGEST]
