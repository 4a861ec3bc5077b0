"""The pure core: saga definitions, node kinds, the decider, the fold, the journal, the test kit.

Nothing here does I/O: no Kafka, no PostgreSQL, no clock, no randomness.
"""
