"""mypy --strict checks a saga's hooks against its data model and its steps' results.

Small sagas are written to a temporary directory and checked with
``mypy.api.run`` in one run.  The correct versions must pass and each wrong
one must be rejected at the line that is wrong: if the typing of ``StepSpec``,
``route`` or the test kit were lost (``Any`` everywhere), the wrong versions
would pass and this test would fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

HEADER = """
from datetime import timedelta

from pydantic import BaseModel

from sagaline import (
    DONE,
    AgentTurn,
    Done,
    Node,
    Saga,
    SagaTestKit,
    SignalInfo,
    StepContext,
    agent,
    approval,
    step,
    tool,
)


class Data(BaseModel):
    n: int = 0


class Count(BaseModel):
    n: int


class Counter(Saga[Data]):
    type_name = "typing"

    @step
    def first(self, ctx: StepContext, data: Data) -> Count:
        return Count(n=data.n + 1)

    @step
    def second(self, ctx: StepContext, data: Data) -> None:
        return None
"""

GOOD_HOOKS = """
    @first.on_result
    def _fold(self, data: Data, result: Count) -> Data:
        return data.model_copy(update={"n": result.n})

    @first.compensation
    def _undo(self, ctx: StepContext, data: Data) -> None:
        return None

    @first.route(second, DONE)
    def _next(self, data: Data) -> Node | Done | None:
        return DONE if data.n > 3 else type(self).second


kit = SagaTestKit(Counter)
kit.start(Data())
kit.succeed(Counter.first, Count(n=2))
kit.expect_task(Counter.second)
"""

SNIPPETS = {
    "good": HEADER + GOOD_HOOKS,
    # on_result declares the wrong result type (the step returns Count)
    "bad_on_result": HEADER
    + """
    @first.on_result  # error here
    def _fold(self, data: Data, result: str) -> Data:
        return data
""",
    # on_result returns something that is not the saga data
    "bad_on_result_return": HEADER
    + """
    @first.on_result  # error here
    def _fold(self, data: Data, result: Count) -> Count:
        return result
""",
    # route returns a node's name instead of the node
    "bad_route_name": HEADER
    + """
    @first.route("second")  # error here
    def _next(self, data: Data) -> str | None:
        return "second"
""",
    # route is annotated correctly but returns an unknown name anyway
    "bad_route_value": HEADER
    + """
    @first.route(second)
    def _next(self, data: Data) -> Node | Done | None:
        return "nowhere"  # error here
""",
    # an agent's LLM hook must return an AgentDecision
    "bad_llm": HEADER
    + """
    @tool()
    def search(self, ctx: StepContext, args: Count) -> None:
        return None

    investigate = agent(tools=[search])

    @investigate.llm  # error here
    def think(self, ctx: StepContext, turn: AgentTurn) -> str:
        return "search"
""",
    # a wait's on_signal hook folds into the data it was given
    "bad_on_signal": HEADER
    + """
    ok = approval(timeout=timedelta(days=1))

    @ok.on_signal  # error here
    def _signed(self, data: Data, signal: SignalInfo) -> SignalInfo:
        return signal
""",
    # the test kit checks a reply against the step's result type
    "bad_kit_result": HEADER
    + """

kit = SagaTestKit(Counter)
kit.succeed(Counter.first, Data())  # error here
""",
    # a misspelt public name: the packages import their names lazily at run time,
    # which must not make every name exist for the type checker
    "bad_import": """
from sagaline import SagaTestKit, StepContxt  # error here
""",
    "bad_import_consumers": """
from sagaline.consumers import Worker, WorkerOption  # error here
""",
    "bad_import_runtime": """
from sagaline.orchestrator.runtime import Orchestrator, TopicLayuot  # error here
""",
    "bad_import_console": """
from sagaline.orchestrator.console import ConsoleOptions, create_ap  # error here
""",
}


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[int]]:
    """Line numbers mypy --strict reports an error at, per snippet."""
    api = pytest.importorskip("mypy.api")
    work = tmp_path_factory.mktemp("typing")
    (work / "sagaline").symlink_to(ROOT, target_is_directory=True)
    (work / "mypy.ini").write_text(
        f"[mypy]\nstrict = True\nmypy_path = {work}\nplugins = pydantic.mypy\n",
        encoding="utf-8",
    )
    files = []
    for name, code in SNIPPETS.items():
        path = work / f"snippet_{name}.py"
        path.write_text(code, encoding="utf-8")
        files.append(str(path))
    out, err, _ = api.run(
        ["--config-file", str(work / "mypy.ini"), "--cache-dir", str(work / "cache"), *files]
    )
    found: dict[str, list[int]] = {name: [] for name in SNIPPETS}
    for line in out.splitlines():
        m = re.match(r".*snippet_(\w+)\.py:(\d+): error: ", line)
        if m:
            found[m.group(1)].append(int(m.group(2)))
    assert "error: " not in err, err
    return found


def _marked_line(name: str) -> int:
    lines = SNIPPETS[name].splitlines()
    return next(i for i, text in enumerate(lines, start=1) if text.endswith("# error here"))


def test_the_correct_saga_type_checks(mypy_errors: dict[str, list[int]]) -> None:
    assert mypy_errors["good"] == []


@pytest.mark.parametrize(
    "name",
    [
        "bad_on_result",
        "bad_on_result_return",
        "bad_route_name",
        "bad_route_value",
        "bad_llm",
        "bad_on_signal",
        "bad_import",
        "bad_import_consumers",
        "bad_import_runtime",
        "bad_import_console",
    ],
)
def test_wrongly_typed_hooks_are_rejected_where_they_are_wrong(
    mypy_errors: dict[str, list[int]], name: str
) -> None:
    assert _marked_line(name) in mypy_errors[name], mypy_errors[name]


def test_the_test_kit_checks_a_reply_against_the_step_result(
    mypy_errors: dict[str, list[int]],
) -> None:
    assert _marked_line("bad_kit_result") in mypy_errors["bad_kit_result"]
