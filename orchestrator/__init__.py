"""sagaline orchestrator."""
