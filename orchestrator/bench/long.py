"""``sagaline bench long``: the pure core's cost per decided input as sagas grow.

Goal 4 of issue 11: a decision must not re-encode the saga's whole history,
so a 200-step saga and an agent of 1,000 turns cost per decided input about
what a 5-step saga costs.  Each figure is the median (and p90) of the CPU a
decided input costs the orchestrator: ``decide`` + the journal entry (hash
chain) + the Avro encoding of the new snapshot, as
:func:`sagaline.orchestrator.bench.core.measure` times it.  The inputs are
recorded first (by :class:`~sagaline.orchestrator.core.testing.SagaTestKit`),
then replayed through the core while timed; no Kafka, no database.
"""

from __future__ import annotations

import types
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.decider import Input
from sagaline.orchestrator.core.saga import Saga, agent, step, tool
from sagaline.orchestrator.core.testing import SagaTestKit

__all__ = ["LookupArgs", "LookupResult", "StepsData", "agent_saga", "linear_saga", "record", "run"]

_TIMEOUT = timedelta(seconds=30)
#: the transcript window of the benchmark's agent (what its LLM sees)
AGENT_WINDOW = 16


class StepsData(BaseModel):
    """Saga data of the benchmark sagas."""

    n: int = 0
    answer: str | None = None


class LookupArgs(BaseModel):
    query: str


class LookupResult(BaseModel):
    text: str


def _noop(self: Any, ctx: StepContext, data: StepsData) -> None:
    return None


def _undo(self: Any, ctx: StepContext, data: StepsData) -> None:
    return None


def linear_saga(steps: int, *, compensable: bool = False) -> type[Saga[StepsData]]:
    """A saga of ``steps`` no-op steps in a row (like the e2e benchmark's ``noop5``)."""
    body: dict[str, Any] = {
        "__module__": __name__,
        "type_name": f"bench.linear{steps}{'c' if compensable else ''}",
    }
    for i in range(steps):
        fn = types.FunctionType(_noop.__code__, _noop.__globals__, f"s{i}")
        fn.__annotations__ = dict(_noop.__annotations__)
        if compensable:
            spec = step(timeout=_TIMEOUT)(fn)
            spec.compensation(_undo)
        else:
            spec = step(compensate=None, uses_db=False, timeout=_TIMEOUT)(fn)
        body[f"s{i}"] = spec
    name = f"Linear{steps}{'C' if compensable else ''}"
    return types.new_class(name, (Saga[StepsData],), {}, lambda ns: ns.update(body))


def _lookup(self: Any, ctx: StepContext, args: LookupArgs) -> LookupResult:
    return LookupResult(text=f"found {args.query}")


def _think(self: Any, ctx: StepContext, turn: AgentTurn) -> AgentDecision:
    return AgentDecision.call("lookup", LookupArgs(query=f"q{turn.turn}"))


def _answer(self: Any, data: StepsData, answer: str) -> StepsData:
    return data.model_copy(update={"answer": answer})


def agent_saga(turns: int, *, window: int | None = AGENT_WINDOW) -> type[Saga[StepsData]]:
    """An agent that calls one tool per turn for ``turns`` turns, then answers."""
    lookup = tool(description="Look something up.", timeout=_TIMEOUT)(_lookup)
    think = agent(tools=[lookup], max_turns=turns + 1, timeout=_TIMEOUT, history_window=window)
    think.llm(_think)
    think.on_answer(_answer)
    body: dict[str, Any] = {
        "__module__": __name__,
        "type_name": f"bench.agent{turns}",
        "lookup": lookup,
        "think": think,
    }
    return types.new_class(f"Agent{turns}", (Saga[StepsData],), {}, lambda ns: ns.update(body))


def record(definition: type[Saga[StepsData]], saga_id: str) -> list[Input]:
    """The inputs of one whole run of ``definition`` (every task succeeds)."""
    kit = SagaTestKit(definition, saga_id=saga_id, check_fold=False)
    kit.start(StepsData())
    agents = [n for n in definition.sequence if n.kind == "agent"]
    if agents:
        node = agents[0]
        turns = getattr(node, "max_turns", 1) - 1
        for turn in range(1, turns + 1):
            query = LookupArgs(query=f"q{turn}")
            kit.succeed(f"{node.name}#{turn}", AgentDecision.call("lookup", query))
            kit.succeed(f"{node.name}.lookup#{turn}", LookupResult(text=f"r{turn}"))
        kit.succeed(f"{node.name}#{turns + 1}", AgentDecision.final("done"))
    else:
        for node in definition.sequence:
            kit.succeed(node.name)
    kit.expect_status("completed")
    return list(kit.inputs)


def run(*, repeat: int = 3, sagas_5: int = 200) -> dict[str, object]:
    """Per-input cost at 5 / 50 / 200 steps and for agents of 5, 50 and 1,000 turns.

    The cases take turns, ``repeat`` rounds after a warm-up round, and each
    keeps its round with the lowest median: a burst of load from another
    process on this machine lands on one round of one case, not on a whole case.
    """
    from sagaline.orchestrator.bench.core import measure

    cases: list[tuple[str, type[Saga[StepsData]], int]] = [
        ("steps_5", linear_saga(5), sagas_5),
        ("steps_50", linear_saga(50), max(1, sagas_5 // 10)),
        ("steps_200", linear_saga(200), max(1, sagas_5 // 40)),
        ("agent_5_turns", agent_saga(5), max(1, sagas_5 // 5)),
        ("agent_50_turns", agent_saga(50), max(1, sagas_5 // 50)),
        ("agent_1000_turns", agent_saga(1000), 1),
    ]
    recorded = {
        name: (definition, [record(definition, f"{name}-{i}") for i in range(sagas)])
        for name, definition, sagas in cases
    }
    figures: dict[str, dict[str, float]] = {}
    for round_ in range(repeat + 1):
        for name, (definition, inputs) in recorded.items():
            got = measure(definition, inputs, repeat=1)
            if round_ > 0 and (name not in figures or got["p50_us"] < figures[name]["p50_us"]):
                figures[name] = got
    report: dict[str, object] = {"benchmark": "long", "unit": "us per decided input"}
    report.update(figures)
    base = figures["steps_5"]["p50_us"]
    report["ratio_to_steps_5"] = {
        name: round(f["p50_us"] / base, 2) for name, f in figures.items() if name != "steps_5"
    }
    agents = figures["agent_5_turns"]["p50_us"]
    report["ratio_to_agent_5_turns"] = {
        name: round(figures[name]["p50_us"] / agents, 2)
        for name in ("agent_50_turns", "agent_1000_turns")
    }
    report["goal"] = "per input within 1.2x of steps_5 at 200 steps and 1,000 agent turns"
    return report
