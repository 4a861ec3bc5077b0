"""Codec: exact round trips, union branches, wire headers, typed errors."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from sagaline.schemas.avrogen import avro_schema, full_name
from sagaline.schemas.base import Envelope, Payload, PayloadRef, Record
from sagaline.schemas.catalog import ALL_RECORDS
from sagaline.schemas.codec import CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC, Codec, decode, encode
from sagaline.schemas.commands import COMMAND_TYPES, PauseSaga, ResumeSaga, StartSaga
from sagaline.schemas.deadletter import DeadLetter, dead_letter_for
from sagaline.schemas.errors import (
    BadHeader,
    EncodingError,
    InvalidRecord,
    MessageError,
    RegistryUnavailable,
    TruncatedMessage,
    UnexpectedRecordType,
    UnknownSchema,
)
from sagaline.schemas.registry import Catalogue, ConfluentSchemaRegistry, schema_fingerprint
from sagaline.schemas.replies import StepFailed, StepSucceeded
from sagaline.schemas.samples import sample_records

pytestmark = pytest.mark.unit

WHEN = datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)


def envelope(saga_id: str = "saga-1") -> Envelope:
    return Envelope(message_id="m-1", saga_id=saga_id, saga_type="refund", occurred_at=WHEN)


class Left(Record):
    n: int


class Right(Record):
    n: int


class Holder(Record):
    one: Left | Right
    maybe: Left | Right | None = None
    many: list[Left | Right] = []
    by_key: dict[str, Left | Right] = {}


HOLDER_CODEC = Codec(Catalogue([Holder]))


@pytest.mark.parametrize("model", ALL_RECORDS, ids=lambda m: m.__name__)
def test_every_catalogued_record_round_trips_exactly(model: type[Record]) -> None:
    for sample in sample_records(model):
        data = encode(sample)
        assert data[:2] == SINGLE_OBJECT_MAGIC
        assert decode(data) == sample
        assert decode(data, model) == sample
        assert type(decode(data)) is model


def test_header_is_single_object_encoding_with_the_schema_fingerprint() -> None:
    reply = sample_records(StepSucceeded)[1]
    data = encode(reply)
    assert data[2:10] == schema_fingerprint(avro_schema(StepSucceeded))
    # the fingerprint is the little-endian CRC-64-AVRO of the canonical form
    assert len(data[2:10]) == 8


def test_records_of_identical_shape_keep_their_type() -> None:
    pause = PauseSaga(envelope=envelope(), by="ops")
    resume = ResumeSaga(envelope=envelope(), by="ops")
    assert type(decode(encode(pause))) is PauseSaga
    assert type(decode(encode(resume))) is ResumeSaga


def test_unions_of_records_keep_every_branch() -> None:
    value = Holder(
        one=Right(n=1),
        maybe=Left(n=2),
        many=[Right(n=3), Left(n=4), Right(n=5)],
        by_key={"a": Left(n=6), "b": Right(n=7)},
    )
    back = HOLDER_CODEC.decode(HOLDER_CODEC.encode(value))
    assert back == value
    assert [type(x) for x in back.many] == [Right, Left, Right]
    assert type(back.by_key["b"]) is Right


def test_expected_types_are_enforced() -> None:
    data = encode(StepFailed(**sample_records(StepFailed)[0].model_dump()))
    assert isinstance(decode(data, (StepSucceeded, StepFailed)), StepFailed)
    with pytest.raises(UnexpectedRecordType, match="expected StartSaga"):
        decode(data, StartSaga)
    with pytest.raises(UnexpectedRecordType):
        decode(data, COMMAND_TYPES)


def test_large_payload_bytes_survive() -> None:
    payload = Payload(type_name="x.Y", data=bytes(range(256)) * 4096)
    start = StartSaga(envelope=envelope(), data=payload, input_sha256="0" * 64)
    assert decode(encode(start)) == start


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", TruncatedMessage, "empty"),
        (b"\xc3", TruncatedMessage, "cut short"),
        (b"\xc3\x01\x00\x01", TruncatedMessage, "header needs 10"),
        (b"\xc3\x02abcdefgh", BadHeader, "c301"),
        (b"\x00\x00\x00", TruncatedMessage, "Confluent header"),
        (b"\x00\x00\x00\x00\x07body", UnknownSchema, "no schema registry"),
        (b'{"json": true}', BadHeader, "not a sagaline message"),
        (b"\xc3\x01" + b"\x11" * 8 + b"body", UnknownSchema, "1111111111111111"),
    ],
)
def test_bad_headers_name_the_cause(data: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        decode(data)


def test_none_and_non_bytes_are_message_errors() -> None:
    with pytest.raises(TruncatedMessage, match="None"):
        decode(None)  # type: ignore[call-overload]
    with pytest.raises(BadHeader, match="expected bytes"):
        decode("text")  # type: ignore[call-overload]


def test_truncated_body() -> None:
    data = encode(sample_records(StepSucceeded)[1])
    for cut in (11, len(data) // 2, len(data) - 1):
        with pytest.raises(TruncatedMessage, match="ends before"):
            decode(data[:cut])


def test_trailing_bytes_are_refused() -> None:
    data = encode(sample_records(StepSucceeded)[0])
    with pytest.raises(InvalidRecord, match="left over"):
        decode(data + b"\x00")


def test_wrong_types_fail_validation() -> None:
    # A body that is valid Avro for the schema but breaks the model: a naive datetime
    # cannot happen, so use a schema-valid record with an out-of-range enum index.
    data = bytearray(encode(PauseSaga(envelope=envelope(), by="ops")))
    # corrupt the body into garbage of the same length
    for i in range(10, len(data)):
        data[i] = 0xFF
    with pytest.raises(MessageError):
        decode(bytes(data))


def test_encode_refuses_records_outside_the_catalogue() -> None:
    with pytest.raises(EncodingError, match="not in the codec's catalogue"):
        encode(Left(n=1))
    too_big = StepFailed(**{**sample_records(StepFailed)[0].model_dump(), "attempt": 2**70})
    with pytest.raises(EncodingError, match="cannot encode"):
        encode(too_big)


def test_confluent_framing_with_a_preloaded_registry_cache() -> None:
    registry = ConfluentSchemaRegistry("http://127.0.0.1:9")
    schema = avro_schema(StepSucceeded)
    registry.preload(42, schema, subject=full_name(StepSucceeded))
    codec = Codec(registry=registry)
    reply = sample_records(StepSucceeded)[1]
    data = codec.encode(reply)
    assert data[:5] == CONFLUENT_MAGIC + struct.pack(">I", 42)
    assert codec.decode(data) == reply
    assert Codec().decode(encode(reply)) == reply
    # a codec with a registry still reads single-object messages
    assert codec.decode(encode(reply)) == reply
    with pytest.raises(UnknownSchema, match="schema id 7"):
        Codec().decode(CONFLUENT_MAGIC + struct.pack(">I", 7) + b"x")


def test_unreachable_registry_while_decoding_is_not_a_message_error() -> None:
    registry = ConfluentSchemaRegistry("http://127.0.0.1:9", timeout=2)
    codec = Codec(registry=registry)
    with pytest.raises(RegistryUnavailable) as caught:
        codec.decode(CONFLUENT_MAGIC + struct.pack(">I", 5) + b"body")
    assert not isinstance(caught.value, MessageError)


def test_dead_letter_for_keeps_bytes_position_and_reason() -> None:
    error = TruncatedMessage("the message ends early")
    letter = dead_letter_for(
        "sagaline.replies",
        3,
        99,
        b"saga-1",
        b"\xc3\x01",
        [("traceparent", b"00-abc"), ("empty", None), ("text", "v")],
        error,
        "orchestrator",
        WHEN,
    )
    assert letter.source_topic == "sagaline.replies"
    assert (letter.source_partition, letter.source_offset) == (3, 99)
    assert letter.value == b"\xc3\x01" and letter.key == b"saga-1"
    assert letter.headers == {"traceparent": b"00-abc", "text": b"v"}
    assert letter.error_type == "TruncatedMessage" and letter.error_code == "truncated"
    assert letter.reason == "the message ends early"
    assert decode(encode(letter), DeadLetter) == letter
    long = dead_letter_for("t", 0, 0, None, None, None, "x" * 10_000, "w", WHEN)
    assert len(long.reason) == 4000 and long.error_type == "Rejected"


def test_payload_ref_round_trip() -> None:
    ref = Payload(type_name="big.Model", ref=PayloadRef(sha256="ab" * 32, size=10**6))
    start = StartSaga(envelope=envelope(), data=ref, input_sha256="1" * 64)
    assert decode(encode(start)) == start
