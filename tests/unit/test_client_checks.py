"""``SagaClient`` refuses, before sending, data the orchestrator could not decode."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from sagaline.orchestrator.client import UnsupportedDataModel
from sagaline.orchestrator.client.saga_client import check_data_model
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.saga import Saga, step

pytestmark = pytest.mark.unit


class Good(BaseModel):
    name: str


class Other(BaseModel):
    name: str


class GoodSaga(Saga[Good]):
    type_name = "test.client_checks"

    @step(compensate=None, uses_db=False)
    def only(self, ctx: StepContext, data: Good) -> None:
        return None


def test_a_model_defined_in_main_is_refused_with_the_fix() -> None:
    script_model = type(
        "BenchData", (BaseModel,), {"__module__": "__main__", "__annotations__": {"n": int}}
    )
    with pytest.raises(UnsupportedDataModel) as refused:
        check_data_model("bench", script_model(n=1))
    message = str(refused.value)
    assert "BenchData is defined in __main__" in message
    assert "move BenchData (and its saga) into a module" in message


def test_data_of_another_model_than_the_saga_takes_is_refused() -> None:
    with pytest.raises(UnsupportedDataModel, match=r"takes .*Good, not .*Other"):
        check_data_model(GoodSaga, Other(name="x"))


def test_the_saga_own_model_passes() -> None:
    check_data_model(GoodSaga, Good(name="x"))
    check_data_model("test.client_checks", Good(name="x"))
