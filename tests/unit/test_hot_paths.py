"""The hot paths' shortcuts give exactly what the general code gives (issue 11).

Message ids written without the UUID object equal ``uuid.uuid5``; records built
or copied with ``schemas/trusted.py`` equal pydantic's ``model_validate`` /
``model_copy``; a journal built with them still chains and verifies.
"""

from __future__ import annotations

import uuid

import orjson
import pytest

from sagaline.orchestrator.bench.core import _one_saga
from sagaline.orchestrator.core.decision import _ID_NAMESPACE, derive_message_id
from sagaline.orchestrator.core.journal import (
    FLOAT_FIELDS,
    LATE_FIELDS,
    _bytes_as_b64,
    _python_float,
    canonical_json,
    fold_journal,
    verify_chain,
)
from sagaline.schemas.journal import JOURNAL_INPUT_TYPES, JournalEntry
from sagaline.schemas.samples import sample_records
from sagaline.schemas.state import SagaState
from sagaline.schemas.trusted import construct, replace

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "parts",
    [
        ("saga-1", "journal", 1),
        ("", 0),
        ("émoji 😀 / slash", None, 3.5),
        ("x" * 500,),
        tuple(range(20)),
    ],
)
def test_message_ids_are_uuid5(parts: tuple[object, ...]) -> None:
    expected = str(uuid.uuid5(_ID_NAMESPACE, "/".join(str(p) for p in parts)))
    assert derive_message_id(*parts) == expected


def test_replace_is_model_copy_with_update() -> None:
    for state in sample_records(SagaState):
        update = {"journal_seq": 42, "status": "paused", "node": "n"}
        before = state.model_dump()
        copied, replaced = state.model_copy(update=update), replace(state, update)
        assert replaced == copied
        assert replaced.model_fields_set == copied.model_fields_set
        assert replaced.model_dump() == copied.model_dump()
        assert replaced.journal_seq == 42 and replaced.node == "n"
        assert state.model_dump() == before  # the original is untouched


def test_construct_is_validation_of_valid_values() -> None:
    for state in sample_records(SagaState):
        values = dict(state.__dict__)
        built = construct(SagaState, values)
        assert built == SagaState.model_validate(values)
        assert built.model_fields_set == set(SagaState.model_fields)


def test_a_journal_built_on_the_hot_path_chains_and_folds() -> None:
    kit = _one_saga(7)
    entries = list(kit.journal)
    assert verify_chain(entries) == []
    folded = fold_journal(entries)
    assert folded is not None and folded.journal_hash == entries[-1].hash
    assert folded.status == "completed"


def _canonical_by_model_dump(entry: JournalEntry) -> bytes:
    """The canonical JSON as it was written before (``model_dump`` first): the reference."""
    body = entry.model_dump(mode="python", exclude={"hash"})
    records = [(body["input"], entry.input_type)] if body["input"] is not None else []
    records += [(event, event["event"]) for event in body["events"]]
    for record, type_name in records:
        for name, default in LATE_FIELDS.get(type_name or "", {}).items():
            if name in record and record[name] == default:
                del record[name]
        if (type_name, "progress") in FLOAT_FIELDS:
            record["progress"] = _python_float(record["progress"])
    return orjson.dumps(body, default=_bytes_as_b64, option=orjson.OPT_SORT_KEYS)


def test_canonical_json_from_fields_equals_the_model_dump_form() -> None:
    samples = list(sample_records(JournalEntry))
    entries = samples + [  # input_type naming the input, as the decider writes it
        e.model_copy(update={"input_type": type(e.input).__name__})
        for e in samples
        if e.input is not None
    ]
    entries += [entry for i in range(3) for entry in _one_saga(i).journal]
    # every input type and every event type, each with its late fields set and unset
    for entry in entries:
        assert canonical_json(entry) == _canonical_by_model_dump(entry)
    assert {type(e.input).__name__ for e in entries} >= set(JOURNAL_INPUT_TYPES)
