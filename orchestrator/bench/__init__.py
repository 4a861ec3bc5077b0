"""``python -m orchestrator.bench``: the orchestrator's part of ``sagaline bench`` (JSON output)."""

from orchestrator.bench.responder import Responder
from orchestrator.bench.sagas import BENCH_REGISTRY, BenchData, NoOp5

__all__ = ["BENCH_REGISTRY", "BenchData", "NoOp5", "Responder"]
