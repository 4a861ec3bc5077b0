"""Local Apache Kafka (KRaft) and PostgreSQL processes for development and tests."""
