"""The hot paths' shortcuts give exactly what the general code gives (issue 11).

Message ids written without the UUID object equal ``uuid.uuid5``; records built
or copied with ``schemas/trusted.py`` equal pydantic's ``model_validate`` /
``model_copy``; a journal built with them still chains and verifies.
"""

from __future__ import annotations

import uuid

import pytest

from sagaline.orchestrator.bench.core import _one_saga
from sagaline.orchestrator.core.decision import _ID_NAMESPACE, derive_message_id
from sagaline.orchestrator.core.journal import fold_journal, verify_chain
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
