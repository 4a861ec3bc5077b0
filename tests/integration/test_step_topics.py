"""An orchestrator starting with a step whose ``to=`` topic does not exist says so (real Kafka)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, step
from sagaline.orchestrator.runtime.core import CoreLogic
from sagaline.orchestrator.runtime.step_topics import check_step_topics, step_topics

pytestmark = pytest.mark.integration


class Order(BaseModel):
    n: int = 0


def test_missing_to_topics_are_named_with_their_steps(
    kafka_bootstrap: str,
    topic_prefix: str,
    create_topics: Callable[..., list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    present, absent = f"{topic_prefix}.payments", f"{topic_prefix}.shipping"
    create_topics([present])

    class Checkout(Saga[Order]):
        type_name = "checkout"

        @step(to=present)
        def pay(self, ctx: StepContext, data: Order) -> None:
            return None

        @step(to=absent)
        def ship(self, ctx: StepContext, data: Order) -> None:
            return None

        @step(to="tasks")  # this deployment's own tasks topic: not a participant's
        def notify(self, ctx: StepContext, data: Order) -> None:
            return None

    class Returns(Saga[Order]):
        type_name = "returns"
        version = 2

        @step(to=absent)
        def collect(self, ctx: StepContext, data: Order) -> None:
            return None

    logic = CoreLogic(SagaRegistry([Checkout, Returns]))
    assert step_topics(logic) == {
        present: ["checkout v1: pay"],
        absent: ["checkout v1: ship", "returns v2: collect"],
    }
    with caplog.at_level(logging.WARNING, logger="sagaline.orchestrator.topics"):
        assert check_step_topics(kafka_bootstrap, logic) == [absent]
    [warning] = [r.getMessage() for r in caplog.records]
    assert f"topic '{absent}' does not exist" in warning
    assert "checkout v1: ship; returns v2: collect" in warning
    assert present not in warning

    # no to= anywhere: nothing to ask Kafka
    plain = CoreLogic(SagaRegistry([]))
    assert step_topics(plain) == {} and check_step_topics("127.0.0.1:9", plain) == []
