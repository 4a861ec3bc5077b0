"""schemas/trusted.make builds what the validating constructor builds.

For every sample of every catalogued record, ``make(cls, **fields)`` (every
field given, and only the fields the sample set) equals ``cls(**fields)``:
same values in the same order, same fields set.  Defaults, default
factories, mutable defaults, UTC-millisecond datetimes and int-to-float are
checked on their own; unknown and missing fields are errors.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.schemas.base import Envelope, Payload, Record
from sagaline.schemas.codec import default_codec
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.samples import sample_records
from sagaline.schemas.state import SagaState, StepState
from sagaline.schemas.trusted import make

pytestmark = pytest.mark.unit

#: the modules that build records with ``make``
MAKERS = [
    f"sagaline.orchestrator.core.{name}"
    for name in (
        "decision",
        "decider",
        "decider_commands",
        "fold",
        "fold_agents",
        *(f"nodes.{kind}" for kind in ("base", "agent", "agent_turns", "child")),
        *(f"nodes.{kind}" for kind in ("compensation", "sleep", "step", "wait")),
    )
]
MODELS = sorted(default_codec().catalogue.models.items())


def _same(a: BaseModel, b: BaseModel) -> None:
    assert type(a) is type(b)
    assert list(a.__dict__.items()) == list(b.__dict__.items())
    # == takes 1 for 1.0 and a list for a tuple; the journal's canonical JSON does not
    assert [type(v) for v in a.__dict__.values()] == [type(v) for v in b.__dict__.values()]
    assert a.model_fields_set == b.model_fields_set
    assert a == b


@pytest.mark.parametrize(("name", "model"), MODELS, ids=[n for n, _ in MODELS])
def test_make_equals_the_validating_constructor_on_every_sample(
    name: str, model: type[Record]
) -> None:
    if model is JournalEntry:  # its before-validator types ``input``: always validated
        with pytest.raises(TypeError, match="cannot be built without validation"):
            make(model, **sample_records(model)[0].__dict__)
        return
    for record in sample_records(model):
        every = dict(record.__dict__)
        _same(make(model, **every), model(**every))
        given = {k: v for k, v in record.__dict__.items() if k in record.model_fields_set}
        _same(make(model, **given), model(**given))


def test_defaults_factories_datetimes_and_floats() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678_999, tzinfo=timezone(timedelta(hours=2)))
    fields = {"message_id": "m", "saga_id": "s", "saga_type": "t", "occurred_at": at}
    made, validated = make(Envelope, **fields), Envelope(**fields)
    _same(made, validated)
    assert made.occurred_at.tzinfo is UTC and made.occurred_at.microsecond == 678_000
    assert made.trace == {} and made.trace is not make(Envelope, **fields).trace
    _same(make(StepState, name="a", run=1), StepState(name="a", run=1))
    state = sample_records(SagaState)[0]
    assert make(SagaState, **state.__dict__) == state


def test_int_given_to_a_float_field_becomes_a_float() -> None:
    class Scored(Record):
        score: float
        maybe: float | None = None

    made = make(Scored, score=1, maybe=2)
    assert type(made.score) is float and type(made.maybe) is float
    _same(made, Scored(score=1, maybe=2))


def test_unknown_and_missing_fields_and_validated_models_are_errors() -> None:
    with pytest.raises(TypeError, match="unknown fields"):
        make(Payload, type_name="t", nope=1)
    with pytest.raises(TypeError, match="missing fields"):
        make(Payload)

    class Validated(Record):
        x: int

        @field_validator("x")
        @classmethod
        def _positive(cls, v: int) -> int:
            return abs(v)

    with pytest.raises(TypeError, match="cannot be built without validation"):
        make(Validated, x=-1)


def _checking_make(cls: type[Record], **values: Any) -> Any:
    made = make(cls, **values)
    _same(made, cls(**values))
    return made


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``make`` of the decider and the folds also builds the record with
    validation and asserts both are the same."""
    for name in MAKERS:
        monkeypatch.setattr(importlib.import_module(name), "make", _checking_make)


@pytest.mark.usefixtures("checked")
def test_the_deciders_records_equal_validated_ones_through_whole_sagas() -> None:
    from sagaline.orchestrator.bench.core import BenchData, BenchSaga, Reserved
    from sagaline.orchestrator.bench.long import agent_saga, linear_saga, record

    assert record(linear_saga(5, compensable=True), "lin")
    assert record(agent_saga(4), "agent")
    kit = SagaTestKit(BenchSaga, saga_id="bench-fail")
    kit.start(BenchData())
    kit.succeed("reserve", Reserved(ok=True))
    kit.reject("manager_ok", by="boss")
    kit.advance(timedelta(minutes=5))
    assert kit.journal
    kit = SagaTestKit(BenchSaga, saga_id="bench-retry")
    kit.start(BenchData())
    kit.fail("reserve", "transient", retryable=True)
    kit.advance(timedelta(minutes=5))
    events = {type(e).__name__ for entry in kit.journal for e in entry.events}
    assert "StepAttemptFailed" in events
