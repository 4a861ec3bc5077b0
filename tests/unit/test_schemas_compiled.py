"""The compiled Avro functions (``schemas/avro_compiled.py``) agree with fastavro.

Encoding writes fastavro's bytes for every sample of every catalogued record;
decoding gives fastavro's dicts (then validated) or, for sagaline's own records,
the very records validation would give; frozen journals decode and verify.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fastavro import schemaless_reader, schemaless_writer

from sagaline.orchestrator.core.journal import verify_chain
from sagaline.schemas.avro_compiled import Bad, _long, _varint, compile_record
from sagaline.schemas.codec import Codec, default_codec
from sagaline.schemas.errors import InvalidRecord, TruncatedMessage
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.samples import sample_records
from sagaline.schemas.state import SagaState

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).parent / "data" / "journals_v1.json"
CODEC = default_codec()
MODELS = sorted(CODEC.catalogue.models.items())


@pytest.mark.parametrize(("name", "model"), MODELS, ids=[n for n, _ in MODELS])
def test_compiled_functions_agree_with_fastavro(name: str, model: type) -> None:
    compiled = compile_record(CODEC.catalogue.current(name).schema, model)
    assert compiled.decode_trusted is not None, f"{name} is decoded with validation"
    parsed = CODEC._writers[model].schema
    dump = CODEC._writers[model].dump
    for record in sample_records(model):
        out = io.BytesIO()
        schemaless_writer(out, parsed, dump(record))
        reference = out.getvalue()
        body = bytearray()
        compiled.encode(record, body)
        assert bytes(body) == reference
        expected = schemaless_reader(
            io.BytesIO(reference),
            parsed,
            None,
            return_record_name=True,
            return_record_name_override=True,
        )
        assert compiled.decode_dict(reference, 0) == (expected, len(reference))
        built, end = compiled.decode_trusted(reference, 0)
        assert end == len(reference)
        assert type(built) is type(record) and built == record
        assert built.model_dump() == record.model_dump()
        assert built.model_fields_set == set(model.model_fields)


def test_codec_round_trips_both_ways_on_every_sample() -> None:
    for _, model in MODELS:
        for record in sample_records(model):
            data = CODEC.encode(record)
            assert CODEC.decode(data, model) == record
            assert CODEC.decode_trusted(data, model) == record


def test_frozen_journals_decode_trusted_and_still_verify() -> None:
    raw = json.loads(CORPUS.read_text())
    for name, entries in raw.items():
        validated = [JournalEntry.model_validate_json(json.dumps(e)) for e in entries]
        decoded = [CODEC.decode_trusted(CODEC.encode(e), JournalEntry) for e in validated]
        assert decoded == validated, name
        assert verify_chain(decoded) == [], name


def test_truncated_and_padded_bodies_fail_cleanly_in_both_modes() -> None:
    state = sample_records(SagaState)[-1]
    data = CODEC.encode(state)
    for decode in (CODEC.decode, CODEC.decode_trusted):
        with pytest.raises(TruncatedMessage, match="ends before"):
            decode(data[:-3], SagaState)
        with pytest.raises(InvalidRecord, match="left over"):
            decode(data + b"\x00", SagaState)


def test_an_enum_index_out_of_range_is_an_invalid_record() -> None:
    state = sample_records(SagaState)[0]
    data = bytearray(CODEC.encode(state))
    # saga_id and saga_type (length byte + text), saga_version, then the status enum
    at = 10 + 1 + len(state.saga_id.encode()) + 1 + len(state.saga_type.encode())
    at += len(_long(state.saga_version))
    assert data[at] == _long(0)[0]  # status "running", symbol 0
    data[at] = 0x7E  # symbol 63: out of range
    for decode in (Codec().decode, Codec().decode_trusted):
        with pytest.raises(InvalidRecord, match="enum index out of range"):
            decode(bytes(data), SagaState)


def test_a_varint_beyond_64_bits_is_refused() -> None:
    # a tenth byte may carry bit 63 only: more decoded to a value no long holds, which
    # then failed to encode again (found by test_schemas_fuzz)
    assert _varint(bytes([0xFF] * 8 + [0x01]), 0, 0xFF) == (2**64 - 1, 9)
    with pytest.raises(Bad, match="beyond 64 bits"):
        _varint(bytes([0xFF] * 8 + [0x02]), 0, 0xFF)
    with pytest.raises(Bad, match="longer than 10 bytes"):
        _varint(bytes([0xFF] * 8 + [0x81, 0x00]), 0, 0xFF)
