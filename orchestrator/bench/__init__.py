"""The orchestrator's part of ``sagaline bench`` (JSON output)."""

from sagaline.orchestrator.bench.responder import Responder
from sagaline.orchestrator.bench.sagas import BENCH_REGISTRY, BenchData, NoOp5

__all__ = ["BENCH_REGISTRY", "BenchData", "NoOp5", "Responder"]
