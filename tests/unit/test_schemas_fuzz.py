"""Property-based tests: random records round-trip; random and mutated bytes
either decode into a valid record or raise a SchemaError, never anything else."""

from __future__ import annotations

import enum
import tracemalloc
import uuid
from datetime import UTC, date, datetime
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagaline.schemas._introspect import (
    is_enum_class,
    is_literal,
    is_record_class,
    mapping_value,
    sequence_item,
    union_members,
    unwrap,
)
from sagaline.schemas.base import Record
from sagaline.schemas.catalog import ALL_RECORDS
from sagaline.schemas.codec import Codec, default_codec
from sagaline.schemas.errors import SchemaError
from sagaline.schemas.registry import Catalogue
from sagaline.schemas.samples import sample_records

pytestmark = [pytest.mark.unit, pytest.mark.timeout(240)]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODEC = default_codec()
VALID = [CODEC.encode(s) for m in ALL_RECORDS for s in sample_records(m)]
HEADERS = sorted({v[:10] for v in VALID})
_NONE = type(None)


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    tp = unwrap(tp)
    members = union_members(tp)
    if members is not None:
        return st.one_of(*(st.none() if m is _NONE else strategy_for(m) for m in members))
    if tp is str:
        return st.text(max_size=20)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(min_value=-(2**63), max_value=2**63 - 1)
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is bytes:
        return st.binary(max_size=40)
    if tp is datetime:
        return st.datetimes(
            min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
        )
    if tp is date:
        return st.dates()
    if tp is uuid.UUID:
        return st.uuids()
    if is_literal(tp):
        return st.sampled_from(get_args(tp))
    if is_enum_class(tp):
        members_list: list[enum.Enum] = list(tp)
        return st.sampled_from(members_list)
    if is_record_class(tp):
        return records(tp)
    item = sequence_item(tp)
    if item is not None:
        return st.lists(strategy_for(item), max_size=3)
    inner = mapping_value(tp)
    if inner is not None:
        return st.dictionaries(st.text(max_size=8), strategy_for(inner), max_size=3)
    raise AssertionError(f"no strategy for {tp!r}")


def records(model: type[Record]) -> st.SearchStrategy[Record]:
    fields = {name: strategy_for(info.annotation) for name, info in model.model_fields.items()}
    return st.fixed_dictionaries(fields).map(model.model_validate)


def decodes_or_schema_error(codec: Codec, data: bytes) -> None:
    try:
        record = codec.decode(data)
    except SchemaError:
        return
    assert isinstance(record, Record)
    # whatever decoded is a valid record that encodes again
    assert codec.decode(codec.encode(record)) == record


@FUZZ
@given(st.data())
def test_random_records_round_trip(data: st.DataObject) -> None:
    model = data.draw(st.sampled_from(ALL_RECORDS))
    record = data.draw(records(model))
    assert CODEC.decode(CODEC.encode(record), model) == record


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(blob: bytes) -> None:
    decodes_or_schema_error(CODEC, blob)


@FUZZ
@given(st.sampled_from(HEADERS), st.binary(max_size=300))
def test_known_header_with_random_body(header: bytes, body: bytes) -> None:
    decodes_or_schema_error(CODEC, header + body)


@FUZZ
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_byte_flips(valid: bytes, flips: list[tuple[int, int]]) -> None:
    data = bytearray(valid)
    for position, value in flips:
        data[position % len(data)] = value
    decodes_or_schema_error(CODEC, bytes(data))


@FUZZ
@given(st.sampled_from(VALID), st.integers(min_value=0), st.binary(min_size=1, max_size=12))
def test_insertions_deletions_truncations(valid: bytes, where: int, chunk: bytes) -> None:
    cut = where % (len(valid) + 1)
    decodes_or_schema_error(CODEC, valid[:cut])
    decodes_or_schema_error(CODEC, valid[:cut] + chunk + valid[cut:])
    decodes_or_schema_error(CODEC, valid[:cut] + valid[cut + len(chunk) :])


def zigzag(n: int) -> bytes:
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Strings(Record):
    items: list[str]
    blob: bytes = b""


def test_corrupted_lengths_fail_fast_without_allocating() -> None:
    codec = Codec(Catalogue([Strings]))
    header = codec.encode(Strings(items=[]))[:10]
    huge = 2**62
    for body in (
        zigzag(huge),  # array count
        zigzag(-huge) + zigzag(huge),  # negative block count then a byte size
        zigzag(1) + zigzag(huge) + b"abc",  # string length
        zigzag(0) + zigzag(huge) + b"abc",  # bytes length
        zigzag(-1),  # negative length
    ):
        tracemalloc.start()
        try:
            with pytest.raises(SchemaError):
                codec.decode(header + body)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1_000_000, f"decoding {body.hex()} allocated {peak} bytes"
