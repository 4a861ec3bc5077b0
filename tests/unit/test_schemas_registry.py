"""Catalogue and the Confluent Schema Registry client (no registry server here:
only request building, caching and error mapping are tested; see docs/schemas.md)."""

from __future__ import annotations

import json
import socket

import pytest

from sagaline.schemas.avrogen import avro_schema, full_name
from sagaline.schemas.catalog import ALL_RECORDS
from sagaline.schemas.errors import RegistryError, RegistryUnavailable, SchemaError, UnknownSchema
from sagaline.schemas.registry import (
    Catalogue,
    ConfluentSchemaRegistry,
    SchemaVersion,
    error_from_response,
    record_name_subject,
    schema_fingerprint,
    topic_name_subject,
    topic_record_name_subject,
)
from sagaline.schemas.replies import StepSucceeded

pytestmark = pytest.mark.unit


def test_catalogue_indexes_current_schemas() -> None:
    catalogue = Catalogue.default()
    name = full_name(StepSucceeded)
    current = catalogue.current(name)
    assert current.release is None
    assert catalogue.by_fingerprint(current.fingerprint) == current
    assert catalogue.model(name) is StepSucceeded
    assert StepSucceeded in catalogue
    assert set(catalogue.models) == {full_name(m) for m in ALL_RECORDS}
    assert catalogue.versions(name)[-1] == current
    with pytest.raises(UnknownSchema, match="no current record"):
        catalogue.model("dev.sagaline.Nope")
    with pytest.raises(UnknownSchema, match="unknown schema fingerprint 0000000000000000"):
        catalogue.by_fingerprint(bytes(8))


def test_fingerprint_matches_the_avro_specification() -> None:
    # CRC-64-AVRO of the canonical form '"int"' is 0x7275d51a3f395c8f (little-endian on the wire)
    assert schema_fingerprint("int") == bytes.fromhex("8f5c393f1ad57572")


def test_schema_version_refuses_non_records_and_unbounded_arrays() -> None:
    with pytest.raises(SchemaError, match="must be an Avro record"):
        SchemaVersion.of({"type": "enum", "name": "E", "symbols": ["a"]})
    unbounded = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "a", "type": {"type": "array", "items": "null"}}],
    }
    with pytest.raises(SchemaError, match="zero bytes"):
        SchemaVersion.of(unbounded)


def test_subject_strategies() -> None:
    assert record_name_subject("dev.sagaline.StartSaga") == "dev.sagaline.StartSaga"
    strategy = topic_record_name_subject("sagaline.commands")
    assert strategy("dev.sagaline.StartSaga") == "sagaline.commands-dev.sagaline.StartSaga"
    assert topic_name_subject("sagaline.state")("dev.sagaline.SagaState") == "sagaline.state-value"


def test_request_building() -> None:
    registry = ConfluentSchemaRegistry("http://127.0.0.1:8081/", auth=("u", "p"))
    request = registry.build_request("POST", "/subjects/a%2Fb/versions", {"schema": "{}"})
    assert request.full_url == "http://127.0.0.1:8081/subjects/a%2Fb/versions"
    assert request.get_method() == "POST"
    assert request.get_header("Content-type") == ConfluentSchemaRegistry.CONTENT_TYPE
    assert request.get_header("Authorization") == "Basic dTpw"
    assert json.loads(request.data) == {"schema": "{}"}  # type: ignore[arg-type]
    get = registry.build_request("GET", "/schemas/ids/3", None)
    assert get.data is None and get.get_header("Content-type") is None
    with pytest.raises(RegistryError, match="http"):
        ConfluentSchemaRegistry("ftp://x")


def test_cache_answers_without_http() -> None:
    registry = ConfluentSchemaRegistry(f"http://127.0.0.1:{closed_port()}")
    schema = avro_schema(StepSucceeded)
    subject = full_name(StepSucceeded)
    registry.preload(11, schema, subject)
    assert registry.register(subject, schema) == 11
    assert registry.lookup(subject, schema) == 11
    assert registry.schema_by_id(11) == schema
    # the cache is keyed by canonical form: docs and defaults do not matter
    stripped = json.loads(json.dumps(schema).replace('"doc"', '"ignored_doc"'))
    assert registry.cached_id(subject, stripped) == 11


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_registry_is_registry_unavailable() -> None:
    registry = ConfluentSchemaRegistry(f"http://127.0.0.1:{closed_port()}", timeout=2)
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        registry.schema_by_id(1)


@pytest.mark.parametrize(
    ("status", "body", "error", "words"),
    [
        (404, b'{"error_code": 40403, "message": "Schema not found"}', UnknownSchema, "40403"),
        (409, b'{"error_code": 409, "message": "incompatible"}', RegistryError, "incompatible"),
        (422, b'{"error_code": 42201, "message": "bad"}', RegistryError, "invalid"),
        (503, b"down", RegistryUnavailable, "503"),
        (401, b"<html>", RegistryError, "401"),
    ],
)
def test_error_mapping(status: int, body: bytes, error: type[Exception], words: str) -> None:
    found = error_from_response(status, body, "GET /x")
    assert isinstance(found, error)
    assert words in str(found)
