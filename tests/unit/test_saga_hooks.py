"""Hooks are checked when the class is created; routes return nodes; node kinds are registered."""

from __future__ import annotations

import types
import typing
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from sagaline import DONE, Node, Saga, SagaDefinitionError, SagaTestKit, StepContext, step
from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn
from sagaline.orchestrator.core.errors import RoutingError
from sagaline.orchestrator.core.nodes import base, kind_of
from sagaline.orchestrator.core.nodes.base import NodeKind, register, registered_kinds
from sagaline.orchestrator.core.saga import agent, approval, child, sleep, tool
from sagaline.schemas.events import NodeEntered
from sagaline.schemas.events import NodeKind as JournalNodeKind

pytestmark = pytest.mark.unit


class D(BaseModel):
    n: int = 0


class R(BaseModel):
    value: int


class Args(BaseModel):
    q: str


def define(body: dict[str, Any], name: str = "Hooks") -> type[Saga[D]]:
    namespace = {"type_name": name.lower(), **body}
    return types.new_class(name, (Saga[D],), {}, lambda ns: ns.update(namespace))


def body(self: Any, ctx: StepContext, data: D) -> R:
    return R(value=1)


@pytest.mark.parametrize(
    ("attach", "message"),
    [
        (
            lambda s: s.on_result(lambda self, data: data),
            r"Hooks\.a on_result hook: expected \(self, data, result\), got 2 params",
        ),
        (
            lambda s: s.route(DONE)(lambda self, data, extra: None),
            r"Hooks\.a route hook: expected \(self, data\), got 3 params",
        ),
        (
            lambda s: s.compensation(lambda self, data: None),
            r"Hooks\.a compensation: expected \(self, ctx, data\), got 2 params",
        ),
    ],
)
def test_a_step_hook_with_the_wrong_arity_is_named(attach: Any, message: str) -> None:
    spec = step(body)
    attach(spec)
    with pytest.raises(SagaDefinitionError, match=message):
        define({"a": spec})


def test_the_step_itself_with_the_wrong_arity_is_named() -> None:
    with pytest.raises(SagaDefinitionError, match=r"Hooks\.a: expected \(self, ctx, args\)"):
        define({"a": step(lambda self, data: None)})


def test_wait_sleep_child_and_agent_hooks_are_checked() -> None:
    wait = approval(timeout=timedelta(days=1))
    wait.on_signal(lambda self, data: data)
    with pytest.raises(SagaDefinitionError, match=r"Hooks\.w on_signal hook: expected"):
        define({"w": wait})
    with pytest.raises(SagaDefinitionError, match=r"Hooks\.z duration: expected \(self, data\)"):
        define({"z": sleep(lambda self: timedelta(seconds=1))})
    inner = define({"x": step(body)}, "Inner")
    kid = child(inner)
    kid.on_result(lambda self, data: data)
    with pytest.raises(SagaDefinitionError, match=r"Hooks\.c on_result hook: expected"):
        define({"c": kid})

    def search(self: Any, ctx: StepContext, args: Args) -> None:
        return None

    finder = tool()(search)
    loop = agent(tools=[finder])
    loop.llm(lambda self, turn: AgentDecision(answer="x"))
    with pytest.raises(SagaDefinitionError, match=r"Hooks\.ask llm hook: expected"):
        define({"search": finder, "ask": loop})


def test_a_hook_with_defaults_or_varargs_is_accepted() -> None:
    spec = step(body)
    spec.on_result(lambda self, data, result, extra=None: data)
    spec.route(DONE)(lambda *args: None)
    assert define({"a": spec}).node("a") is spec


class Loop(Saga[D]):
    type_name = "hooks-loop"

    @step
    def count(self, ctx: StepContext, data: D) -> R:
        return R(value=data.n + 1)

    @count.on_result
    def _count(self, data: D, result: R) -> D:
        return data.model_copy(update={"n": result.value})

    @count.route(count, DONE)
    def _again(self, data: D) -> Node | None:
        return type(self).count if data.n < 3 else None


def test_a_route_returning_a_node_loops_and_the_kit_takes_node_references() -> None:
    kit = SagaTestKit(Loop)
    kit.start(D())
    for value in (1, 2, 3):
        kit.expect_tasks([Loop.count])
        kit.succeed(Loop.count, R(value=value))
    kit.expect_status("completed")
    assert kit.data.n == 3
    vias = [e.via for e in kit.events if isinstance(e, NodeEntered)]
    assert vias == ["start", "route:count", "route:count", "sequence"]


def test_a_route_returning_a_string_is_a_routing_error() -> None:
    spec = step(body)
    spec.route("b")(lambda self, data: "b")
    saga = define({"a": spec, "b": step(body)})
    kit = SagaTestKit(saga)
    kit.start(D())
    with pytest.raises(RoutingError, match=r"route returned 'b'; return a node"):
        kit.succeed("a", R(value=1))


def test_every_node_kind_has_a_registered_handler() -> None:
    def search(self: Any, ctx: StepContext, args: Args) -> None:
        return None

    def think(self: Any, ctx: StepContext, turn: AgentTurn) -> AgentDecision:
        return AgentDecision(answer="done")

    finder = tool()(search)
    loop = agent(tools=[finder])
    loop.llm(think)
    saga = define(
        {
            "a": step(body),
            "w": approval(timeout=timedelta(days=1)),
            "z": sleep(timedelta(seconds=1)),
            "search": finder,
            "ask": loop,
            "c": child(define({"x": step(body)}, "Kid")),
        }
    )
    kinds = {n.name: kind_of(n).kind for n in saga.nodes.values()}
    assert kinds == {
        "a": "step",
        "w": "wait",
        "z": "sleep",
        "search": "tool",
        "ask": "agent",
        "c": "child",
    }
    assert [n.name for n in saga.sequence] == ["a", "w", "z", "ask", "c"]


def test_the_journal_can_name_every_kind_a_saga_stops_at() -> None:
    stops = {name for name, kind in registered_kinds().items() if kind.in_sequence}
    assert stops == set(typing.get_args(JournalNodeKind))


def test_a_new_node_kind_is_one_class_and_one_registration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(base, "_KINDS", dict(base._KINDS))
    seen: list[str] = []

    class Note(Node):
        kind = "test-note"

    class NoteKind(NodeKind[Note]):
        kind = "test-note"

        def validate(self, cls: type[Saga[Any]], node: Note, localns: dict[str, Any]) -> None:
            seen.append(f"{cls.__qualname__}.{node.name}")

        def mermaid_nodes(self, node: Note) -> list[str]:
            return [f'{node.name}>"note"]']

    with pytest.raises(SagaDefinitionError, match="no node kind 'test-note'"):
        define({"a": step(body), "memo": Note()}, "Unknown")
    register(NoteKind())
    with pytest.raises(SagaDefinitionError, match="registered twice"):
        register(NoteKind())
    saga = define({"a": step(body), "memo": Note()}, "Noted")
    assert seen == ["Noted.memo"]
    assert [n.name for n in saga.sequence] == ["a", "memo"]
    assert '    memo>"note"]' in saga.mermaid().splitlines()
    assert "    memo --> __end" in saga.mermaid().splitlines()
