"""Definitions are validated when the class is created; the registry finds them."""

from __future__ import annotations

import types
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import SagaDefinitionError, UnknownSagaType
from sagaline.orchestrator.core.policies import Retry
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import (
    Saga,
    agent,
    approval,
    child,
    parallel,
    parse_task_step,
    sleep,
    step,
    tool,
)

pytestmark = pytest.mark.unit


class D(BaseModel):
    n: int = 0


class R(BaseModel):
    value: int


class Args(BaseModel):
    q: str


class Good(Saga[D]):
    type_name = "good"

    @step(retry=Retry(max_attempts=2))
    def a(self, ctx: StepContext, data: D) -> R:
        return R(value=data.n)

    @a.on_result
    def _a(self, data: D, result: R) -> D:
        return data.model_copy(update={"n": result.value + 1})

    @a.compensation
    def undo_a(self, ctx: StepContext, data: D) -> None:
        return None

    @step
    def b1(self, ctx: StepContext, data: D) -> None:
        return None

    @step
    def b2(self, ctx: StepContext, data: D) -> None:
        return None

    fan = parallel(b1, b2)
    nap = sleep(timedelta(minutes=5))
    ok = approval(timeout=timedelta(hours=1), on_reject="a")

    @tool()
    def lookup(self, ctx: StepContext, args: Args) -> R:
        return R(value=len(args.q))

    think = agent(tools=[lookup], max_turns=3)

    @think.llm
    def _think(self, ctx: StepContext, turn: AgentTurn) -> AgentDecision:
        return AgentDecision.final("ok")


def test_nodes_in_declaration_order_with_branches_and_tools_out_of_the_sequence() -> None:
    assert [n.name for n in Good.sequence] == ["a", "fan", "nap", "ok", "think"]
    assert set(Good.nodes) == {"a", "b1", "b2", "fan", "nap", "ok", "lookup", "think"}
    assert Good.data_type is D


def test_handler_for_steps_compensations_and_agents() -> None:
    h = Good.handler_for("step", "a")
    assert h.args_type is D and h.result_type is R and h.retry.max_attempts == 2
    assert h.fn(None, D(n=4)) == R(value=4)
    assert Good.handler_for("compensate", "a").result_type is None
    assert Good.handler_for("step", "think#2").result_type is AgentDecision
    assert Good.handler_for("step", "think.lookup#2").args_type is Args
    with pytest.raises(SagaDefinitionError):
        Good.handler_for("compensate", "b1")
    with pytest.raises(SagaDefinitionError):
        Good.handler_for("step", "nope")


def test_parse_task_step_names() -> None:
    assert parse_task_step("a") == ("a", None, None)
    assert parse_task_step("think#12") == ("think", None, 12)
    assert parse_task_step("think.lookup#3") == ("think", "lookup", 3)


def define(body: dict[str, Any], *, name: str | None = "t") -> type[Saga[D]]:
    namespace: dict[str, Any] = dict(body)
    if name is not None:
        namespace["type_name"] = name
    return types.new_class("T", (Saga[D],), {}, lambda ns: ns.update(namespace))


def fn(self: Any, ctx: StepContext, data: D) -> None:
    return None


def test_missing_type_name() -> None:
    with pytest.raises(SagaDefinitionError, match="type_name"):
        define({"a": step(fn)}, name=None)


def test_missing_data_type() -> None:
    with pytest.raises(SagaDefinitionError, match="data type"):
        types.new_class("T", (Saga,), {}, lambda ns: ns.update({"type_name": "t"}))


def test_duplicate_names() -> None:
    with pytest.raises(SagaDefinitionError, match="duplicate node name 'x'"):
        define({"a": step(name="x")(fn), "b": step(name="x")(fn)})
    shared = step(fn)
    with pytest.raises(SagaDefinitionError, match="declared twice"):
        define({"a": shared, "b": shared})


def test_reserved_characters_in_names() -> None:
    with pytest.raises(SagaDefinitionError, match="reserved"):
        define({"a": step(name="a#1")(fn)})


def test_compensable_step_after_the_pivot_needs_a_reason() -> None:
    late = step(fn)
    late.compensation(fn)
    with pytest.raises(SagaDefinitionError, match="after the pivot"):
        define({"pay": step(pivot=True)(fn), "late": late})
    ok = step(compensable_after_pivot="refunds are reversible for 24h")(fn)
    ok.compensation(fn)
    define({"pay": step(pivot=True)(fn), "ok": ok})


def test_a_wait_needs_a_timeout_policy() -> None:
    with pytest.raises(SagaDefinitionError, match="timeout policy"):
        define({"a": step(fn), "w": approval(timeout=None)})


def test_unknown_step_references() -> None:
    with pytest.raises(SagaDefinitionError, match="unknown step reference 'nowhere'"):
        define({"a": step(fn), "w": approval(timeout=timedelta(days=1), on_reject="nowhere")})
    routed = step(fn)
    routed.route("ghost")(lambda self, data: None)
    with pytest.raises(SagaDefinitionError, match="unknown step reference 'ghost'"):
        define({"a": routed})


def test_parallel_branches_must_be_declared_steps() -> None:
    stray = step(fn)
    with pytest.raises(SagaDefinitionError, match="not declared"):
        define({"a": step(fn), "p": parallel(stray, step(name="y")(fn))})


def test_an_agent_needs_its_llm_and_declared_tools() -> None:
    with pytest.raises(SagaDefinitionError, match="register the LLM"):
        define({"think": agent(tools=[])})


def test_a_step_result_must_be_a_model() -> None:
    def returns_int(self: Any, ctx: StepContext, data: D) -> int:
        return 1

    with pytest.raises(SagaDefinitionError, match="pydantic model"):
        define({"a": step(returns_int)})


def test_a_child_with_other_data_needs_an_input_builder() -> None:
    class Other(BaseModel):
        x: int = 0

    class Kid(Saga[Other]):
        type_name = "kid"

        @step
        def only(self, ctx: StepContext, data: Other) -> None:
            return None

    with pytest.raises(SagaDefinitionError, match="input"):
        define({"sub": child(Kid)})


def test_registry_versions_and_errors() -> None:
    class GoodV2(Saga[D]):
        type_name = "good"
        version = 2

        @step
        def a(self, ctx: StepContext, data: D) -> None:
            return None

    registry = SagaRegistry([Good, GoodV2])
    assert registry.get("good", 1) is Good
    assert registry.get("good") is GoodV2
    assert registry.latest("good") is GoodV2
    assert list(registry) == [Good, GoodV2]
    assert ("good", 1) in registry and "good" in registry and len(registry) == 2
    with pytest.raises(UnknownSagaType, match="'good' version 3"):
        registry.get("good", 3)
    with pytest.raises(UnknownSagaType):
        registry.latest("bad")
    with pytest.raises(SagaDefinitionError, match="two definitions"):
        registry.add(define({"a": step(fn)}, name="good"))


def test_mermaid_draws_every_kind_of_node() -> None:
    text = Good.mermaid()
    assert text.splitlines()[0] == "flowchart TD"
    assert 'subgraph fan["parallel: fan"]' in text
    assert 'ok{{"approval: ok (1h)"}}' in text
    assert "ok -- reject --> a" in text and "ok -- timeout --> __compensate" in text
    assert "tools: lookup; max 3 turns" in text
    assert "undo: undo_a" in text and "think --> __end" in text


def test_a_new_version_inherits_nodes_and_overrides_some_in_place() -> None:
    class GoodV3(Good):
        type_name = "good"
        version = 3

        ok = approval(timeout=timedelta(hours=5))

        @step
        def extra(self, ctx: StepContext, data: D) -> None:
            return None

    assert [n.name for n in GoodV3.sequence] == ["a", "fan", "nap", "ok", "think", "extra"]
    ok = GoodV3.node("ok")
    assert ok is not Good.node("ok") and ok.timeout == timedelta(hours=5)  # type: ignore[attr-defined]
    assert Good.node("ok").timeout == timedelta(hours=1)  # type: ignore[attr-defined]
    assert set(GoodV3.nodes) == set(Good.nodes) | {"extra"}
    assert GoodV3.handler_for("step", "think.lookup#1").args_type is Args
