"""Reference agent sagas: refund with manager approval, research agent, lead enrichment.

``REGISTRY`` is what ``sagaline orchestrator run --app sagaline.sagas`` and
``sagaline worker run --app sagaline.sagas`` load.  The sagas keep their business
tables in the application schema (:mod:`sagaline.sagas.tables`); create them with
:func:`sagaline.sagas.tables.ensure_tables`.
"""

from __future__ import annotations

from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.sagas.enrichment import LeadEnrichment
from sagaline.sagas.refund import DemoRefundAgent, RefundAgent
from sagaline.sagas.research import ResearchAgent

__all__ = ["REGISTRY", "DemoRefundAgent", "LeadEnrichment", "RefundAgent", "ResearchAgent"]

REGISTRY = SagaRegistry([RefundAgent, DemoRefundAgent, ResearchAgent, LeadEnrichment])
