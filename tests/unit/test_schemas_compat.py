"""Schema evolution: released versions stay readable; incompatible changes are refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from cli_tools import run_tool_command
from hypothesis import given, settings
from hypothesis import strategies as st

from sagaline.schemas.avrogen import avro_schema
from sagaline.schemas.base import Record
from sagaline.schemas.catalog import ALL_RECORDS
from sagaline.schemas.codec import Codec
from sagaline.schemas.compat import check, check_pair, check_samples, release
from sagaline.schemas.errors import IncompatibleSchema
from sagaline.schemas.registry import RELEASED_DIR, Catalogue, SchemaVersion, load_released

pytestmark = pytest.mark.unit


class EvoV1(Record):
    avro_name: ClassVar[str | None] = "Evo"
    id: str
    count: int
    state: Literal["new", "old", "gone"] = "new"
    note: str | None = None
    dropped: str = "d"


class EvoV2(Record):
    """Compatible: adds fields with defaults, promotes, drops a defaulted field."""

    avro_name: ClassVar[str | None] = "Evo"
    id: str
    count: float
    state: Literal["new", "old"] = "new"
    note: str | None = None
    extra: list[str] = []
    added: int | None = None


def schema_of(model: type[Record]) -> dict[str, Any]:
    return avro_schema(model)


def problems(reader: type[Record], writer: type[Record]) -> list[str]:
    return [f"{p.path}: {p.problem}" for p in check_pair(schema_of(reader), schema_of(writer))]


def test_compatible_evolution_reads_old_data_with_defaults() -> None:
    assert problems(EvoV2, EvoV1) == []
    old = Codec(Catalogue([EvoV1])).encode(EvoV1(id="a", count=3, state="gone", note="n"))
    v1 = SchemaVersion.of(schema_of(EvoV1), release="v1")
    new = Codec(Catalogue([EvoV2], [v1]))
    back = new.decode(old, EvoV2)
    # removed enum symbol -> the enum's default symbol; int promoted to float
    assert back == EvoV2(id="a", count=3.0, state="new", note="n", extra=[], added=None)


V1_CODEC = Codec(Catalogue([EvoV1]))
V2_CODEC = Codec(Catalogue([EvoV2], [SchemaVersion.of(avro_schema(EvoV1), release="v1")]))


@settings(max_examples=150, deadline=None)
@given(
    st.text(max_size=12),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.sampled_from(["new", "old", "gone"]),
    st.none() | st.text(max_size=12),
)
def test_any_v1_record_reads_as_v2(ident: str, count: int, state: str, note: str | None) -> None:
    old = EvoV1.model_validate({"id": ident, "count": count, "state": state, "note": note})
    new = V2_CODEC.decode(V1_CODEC.encode(old), EvoV2)
    assert (new.id, new.count, new.note) == (old.id, float(old.count), old.note)
    assert new.state == (old.state if old.state != "gone" else "new")
    assert (new.extra, new.added) == ([], None)


def test_new_field_without_default_is_refused() -> None:
    class Required(Record):
        avro_name: ClassVar[str | None] = "Evo"
        id: str
        count: int
        state: Literal["new", "old", "gone"] = "new"
        note: str | None = None
        dropped: str = "d"
        owner: str

    assert problems(Required, EvoV1) == ["Evo.owner: new field without a default"]


def test_removed_field_without_default_is_refused() -> None:
    class NoCount(Record):
        avro_name: ClassVar[str | None] = "Evo"
        id: str
        state: Literal["new", "old", "gone"] = "new"

    assert problems(NoCount, EvoV1) == ["Evo.count: field removed, and it had no default"]


def test_type_change_is_refused() -> None:
    class Retyped(Record):
        avro_name: ClassVar[str | None] = "Evo"
        id: int
        count: int

    assert problems(Retyped, EvoV1) == ["Evo.id: type changed from string to long"]


def test_optional_to_required_is_refused() -> None:
    class Tightened(Record):
        avro_name: ClassVar[str | None] = "Evo"
        id: str
        count: int
        note: str

    assert "Evo.note: type changed from null to string" in problems(Tightened, EvoV1)


def test_enum_without_default_is_refused() -> None:
    writer = {
        "type": "record",
        "name": "dev.sagaline.E",
        "fields": [
            {"name": "s", "type": {"type": "enum", "name": "dev.sagaline.S", "symbols": ["a", "b"]}}
        ],
    }
    reader = json.loads(json.dumps(writer))
    reader["fields"][0]["type"]["symbols"] = ["a"]
    found = [p.problem for p in check_pair(reader, writer)]
    assert "enum dev.sagaline.S has no default symbol, so it can never grow" in found
    assert "enum dev.sagaline.S lost symbols ['b'] and has no default" in found


def test_nested_named_types_defined_in_new_fields_are_resolved() -> None:
    assert check_pair(schema_of(EvoV2), schema_of(EvoV2)) == []
    for model in ALL_RECORDS:
        assert check_pair(schema_of(model), schema_of(model)) == [], model


def test_check_refuses_a_removed_record_and_cli_exits_1(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "Evo.avsc").write_text(json.dumps(schema_of(EvoV1)))
    found = check(Catalogue(ALL_RECORDS), tmp_path)
    assert [p.problem for p in found] == [
        "record removed: messages of this release could no longer be read"
    ]
    assert run_tool_command(["schemas", "check-compat", "--released-dir", str(tmp_path)]) == 1


def test_release_writes_schemas_and_samples_then_refuses_twice(tmp_path: Path) -> None:
    written = release("v1", [EvoV1], tmp_path)
    assert sorted(p.name for p in written) == ["Evo.avsc", "Evo.samples.json"]
    fixture = json.loads((tmp_path / "v1" / "Evo.samples.json").read_text())
    assert fixture["record"] == "dev.sagaline.Evo" and len(fixture["samples"]) >= 2
    with pytest.raises(IncompatibleSchema, match="already exists"):
        release("v1", [EvoV1], tmp_path)
    # the next version reads every v1 sample
    codec = Codec(Catalogue([EvoV2], load_released(tmp_path)))
    assert check_samples(codec, tmp_path) == []
    assert check(Catalogue([EvoV2]), tmp_path) == []


def test_an_incompatible_release_is_refused(tmp_path: Path) -> None:
    class Broken(Record):
        avro_name: ClassVar[str | None] = "Evo"
        id: int

    release("v1", [EvoV1], tmp_path)
    with pytest.raises(IncompatibleSchema, match="type changed"):
        release("v2", [Broken], tmp_path)
    assert not (tmp_path / "v2").exists()


def test_samples_that_no_longer_decode_are_reported(tmp_path: Path) -> None:
    release("v1", [EvoV1], tmp_path)
    path = tmp_path / "v1" / "Evo.samples.json"
    fixture = json.loads(path.read_text())
    fixture["samples"].append(base64.b64encode(b"\xc3\x01garbage!").decode())
    path.write_text(json.dumps(fixture))
    found = check_samples(Codec(Catalogue([EvoV2], load_released(tmp_path))), tmp_path)
    assert len(found) == 1 and "unknown schema fingerprint" in found[0].problem


def test_repository_schemas_are_compatible_with_every_release() -> None:
    releases = load_released(RELEASED_DIR)
    assert releases, "schemas/released holds at least one release"
    assert check() == []
    assert run_tool_command(["schemas", "check-compat"]) == 0


def test_every_released_sample_decodes_with_the_current_reader() -> None:
    fixtures = sorted(RELEASED_DIR.glob("*/*.samples.json"))
    assert fixtures
    codec = Codec()
    decoded = 0
    for path in fixtures:
        fixture = json.loads(path.read_text())
        model = codec.catalogue.model(fixture["record"])
        for text in fixture["samples"]:
            record = codec.decode(base64.b64decode(text), model)
            assert isinstance(record, model)
            decoded += 1
    assert decoded >= len(fixtures)


def test_timestamps_survive_in_released_samples() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    codec = Codec()
    paths = sorted(RELEASED_DIR.glob("*/TimerFired.samples.json"))
    assert paths
    for path in paths:
        fixture = json.loads(path.read_text())
        record = codec.decode(base64.b64decode(fixture["samples"][0]))
        assert record.due_at == when  # type: ignore[attr-defined]
