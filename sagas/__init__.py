"""Reference agent sagas: refund with manager approval, research agent, lead enrichment.

``REGISTRY`` is what ``sagaline orchestrator run --app sagas`` and
``sagaline worker run --app sagas`` load.  The sagas keep their business
tables in the application schema (:mod:`sagas.tables`); create them with
:func:`sagas.tables.ensure_tables`.
"""

from __future__ import annotations

from orchestrator.registry import SagaRegistry
from sagas.enrichment import LeadEnrichment
from sagas.refund import DemoRefundAgent, RefundAgent
from sagas.research import ResearchAgent

__all__ = ["REGISTRY", "DemoRefundAgent", "LeadEnrichment", "RefundAgent", "ResearchAgent"]

REGISTRY = SagaRegistry([RefundAgent, DemoRefundAgent, ResearchAgent, LeadEnrichment])
