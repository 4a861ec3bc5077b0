"""sagaline wire contracts: Avro schemas, codec, registry."""
