"""Reference agent sagas: refund with manager approval, research agent, lead enrichment.

``REGISTRY`` is what ``sagaline worker run --app sagaline.sagas:REGISTRY`` loads;
``APP`` (the same sagas and the daily digest's schedule) is what
``sagaline orchestrator run --app sagaline.sagas:APP`` loads.  The sagas keep their business
tables in the application schema (:mod:`sagaline.sagas.tables`); create them with
:func:`sagaline.sagas.tables.ensure_tables`.
"""

from __future__ import annotations

from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.sagas.digest import DAILY_DIGEST, DEMO_DIGEST, DailyDigest
from sagaline.sagas.enrichment import LeadEnrichment
from sagaline.sagas.refund import DemoRefundAgent, RefundAgent
from sagaline.sagas.research import ResearchAgent

__all__ = [
    "APP",
    "DAILY_DIGEST",
    "DEMO_APP",
    "REGISTRY",
    "DailyDigest",
    "DemoRefundAgent",
    "LeadEnrichment",
    "RefundAgent",
    "ResearchAgent",
]

REGISTRY = SagaRegistry([RefundAgent, DemoRefundAgent, ResearchAgent, LeadEnrichment, DailyDigest])
#: the orchestrator's ``--app``: the sagas and the daily digest's schedule
APP = [RefundAgent, DemoRefundAgent, ResearchAgent, LeadEnrichment, DailyDigest, DAILY_DIGEST]
#: ``sagaline demo``'s orchestrator: the digest every five seconds instead of every morning
DEMO_APP = [RefundAgent, DemoRefundAgent, ResearchAgent, LeadEnrichment, DailyDigest, DEMO_DIGEST]
