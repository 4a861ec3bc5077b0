"""sagaline workers, inbox/outbox, relay and projections."""
