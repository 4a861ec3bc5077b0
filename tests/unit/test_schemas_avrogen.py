"""Avro schema generation from the pydantic records."""

from __future__ import annotations

import enum
import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
from cli_tools import run_tool_command
from fastavro import parse_schema

from sagaline.schemas.avrogen import (
    AVRO_DIR,
    _cached_schema,
    avro_schema,
    check_bounded,
    schema_text,
    stale_files,
    write_files,
)
from sagaline.schemas.base import Envelope, Payload, Record, Usage
from sagaline.schemas.catalog import ALL_RECORDS, RECORDS_BY_TOPIC, records_for
from sagaline.schemas.errors import SchemaGenerationError

pytestmark = pytest.mark.unit


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Inner(Record):
    x: int


class OtherInner(Record):
    x: int


class Kitchen(Record):
    """Every supported mapping."""

    text: str
    count: int
    ratio: float
    flag: bool
    blob: bytes
    when: datetime
    kind: Literal["alpha", "beta"] = "beta"
    colour: Colour = Colour.BLUE
    maybe: str | None = None
    tags: list[str] = []
    labels: dict[str, int] = {}
    inner: Inner
    again: Inner | None = None
    either: Inner | OtherInner
    many: tuple[Inner | OtherInner, ...] = ()
    usage: Usage = Usage(tokens_in=3)
    stamp: datetime = datetime(2026, 1, 1, tzinfo=UTC)


def field(schema: dict[str, object], name: str) -> dict[str, object]:
    fields = schema["fields"]
    assert isinstance(fields, list)
    return next(f for f in fields if f["name"] == name)


def test_type_mapping() -> None:
    s = avro_schema(Kitchen)
    assert s["name"] == "dev.sagaline.Kitchen"
    assert s["doc"] == "Every supported mapping."
    assert field(s, "text")["type"] == "string"
    assert field(s, "count")["type"] == "long"
    assert field(s, "ratio")["type"] == "double"
    assert field(s, "flag")["type"] == "boolean"
    assert field(s, "blob")["type"] == "bytes"
    assert field(s, "when")["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert field(s, "kind") == {
        "name": "kind",
        "type": {
            "type": "enum",
            "name": "dev.sagaline.KitchenKind",
            "symbols": ["alpha", "beta"],
            "default": "alpha",
        },
        "default": "beta",
    }
    assert field(s, "colour")["type"]["name"] == "dev.sagaline.Colour"  # type: ignore[index]
    assert field(s, "colour")["default"] == "blue"
    assert field(s, "maybe") == {"name": "maybe", "type": ["null", "string"], "default": None}
    assert field(s, "tags") == {
        "name": "tags",
        "type": {"type": "array", "items": "string"},
        "default": [],
    }
    assert field(s, "labels")["type"] == {"type": "map", "values": "long"}
    assert field(s, "stamp")["default"] == 1767225600000


def test_nested_records_defined_once_then_referenced() -> None:
    s = avro_schema(Kitchen)
    assert field(s, "inner")["type"]["type"] == "record"  # type: ignore[index]
    assert field(s, "again")["type"] == ["null", "dev.sagaline.Inner"]
    either = field(s, "either")["type"]
    assert either[0] == "dev.sagaline.Inner"  # type: ignore[index]
    assert either[1]["name"] == "dev.sagaline.OtherInner"  # type: ignore[index]
    assert field(s, "many")["type"] == {
        "type": "array",
        "items": ["dev.sagaline.Inner", "dev.sagaline.OtherInner"],
    }
    assert field(s, "usage")["default"] == {
        "llm_calls": 0,
        "tokens_in": 3,
        "tokens_out": 0,
        "cost_micros": 0,
    }
    parse_schema(s)  # fastavro accepts it, defaults included


def test_union_puts_the_default_branch_first() -> None:
    class WithDefault(Record):
        value: str | None = "x"
        pick: Inner | OtherInner = OtherInner(x=1)

    s = avro_schema(WithDefault)
    assert field(s, "value") == {"name": "value", "type": ["string", "null"], "default": "x"}
    assert field(s, "pick")["type"][0]["name"] == "dev.sagaline.OtherInner"  # type: ignore[index]
    parse_schema(s)


def test_required_nullable_gets_a_null_default() -> None:
    class Req(Record):
        node: str | None

    assert field(avro_schema(Req), "node")["default"] is None


@pytest.mark.parametrize(
    "annotation",
    [object, set[int], dict[int, str], Literal[1, 2], Literal["not a name"], datetime | int],
)
def test_unmappable_types_are_refused(annotation: object) -> None:
    namespace: dict[str, object] = {"__annotations__": {"bad": annotation}}
    model = type("Bad" + str(abs(hash(str(annotation)))), (Record,), namespace)
    with pytest.raises(SchemaGenerationError):
        avro_schema(model)


def test_zero_size_array_items_are_refused() -> None:
    with pytest.raises(SchemaGenerationError, match="zero bytes"):
        check_bounded({"type": "array", "items": "null"})
    empty = {"type": "record", "name": "E", "fields": []}
    with pytest.raises(SchemaGenerationError):
        check_bounded(
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "a", "type": {"type": "array", "items": empty}}],
            }
        )
    check_bounded({"type": "array", "items": ["null", "long"]})  # a union index is a byte


def test_catalogue_lists_every_topic_group() -> None:
    assert set(RECORDS_BY_TOPIC) >= {"commands", "replies", "tasks", "deadletter", "timers"}
    assert records_for("sagaline.replies") == RECORDS_BY_TOPIC["replies"]
    assert Envelope in ALL_RECORDS and Payload in ALL_RECORDS
    assert len(set(ALL_RECORDS)) == len(ALL_RECORDS)


def test_committed_avsc_files_are_up_to_date() -> None:
    assert stale_files(ALL_RECORDS, AVRO_DIR) == []


def test_write_then_check(tmp_path: Path) -> None:
    generate = ["schemas", "generate", "--dir", str(tmp_path)]
    assert run_tool_command([*generate, "--check"]) == 1  # missing
    assert run_tool_command(generate) == 0
    assert run_tool_command([*generate, "--check"]) == 0
    first = tmp_path / f"{ALL_RECORDS[0].__name__}.avsc"
    first.write_text(first.read_text() + " ")
    assert stale_files(ALL_RECORDS, tmp_path) == [
        f"{first.name}: stale (run sagaline schemas generate)"
    ]
    assert write_files(ALL_RECORDS, tmp_path) == [first]
    (tmp_path / "Gone.avsc").write_text("{}")
    assert "Gone.avsc: no record in sagaline.schemas.catalog.ALL_RECORDS" in stale_files(
        ALL_RECORDS, tmp_path
    )


def test_schema_text_is_stable() -> None:
    # the cached text equals a fresh build (the cache is not what makes it stable) ...
    fresh = _cached_schema.__wrapped__(Kitchen)  # type: ignore[attr-defined]
    assert schema_text(Kitchen) == json.dumps(fresh, indent=2, ensure_ascii=False) + "\n"
    # ... and every process, whatever its hash seed, writes the same bytes
    code = (
        "import hashlib\n"
        "from sagaline.schemas.avrogen import schema_text\n"
        "from sagaline.schemas.catalog import ALL_RECORDS\n"
        "text = ''.join(schema_text(r) for r in ALL_RECORDS)\n"
        "print(hashlib.sha256(text.encode()).hexdigest())\n"
    )
    here = hashlib.sha256("".join(schema_text(r) for r in ALL_RECORDS).encode()).hexdigest()
    for seed in ("1", "2", "3"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        assert out.stdout.strip() == here
    assert schema_text(Kitchen).endswith("}\n")
