"""``@step(local=True)``: the declaration, its class-creation checks, its typing, the wiring."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from sagaline import Saga, StepContext, step
from sagaline.consumers.local_steps import has_local_steps, local_steps_for
from sagaline.orchestrator.core.errors import SagaDefinitionError, SagalineError
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.testing import SagaTestKit

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


class D(BaseModel):
    n: int = 0


class Quick(Saga[D]):
    type_name = "unit.local-quick"

    @step(local=True, uses_db=False, compensate=None)
    def add(self, ctx: StepContext, data: D) -> D:
        return D(n=data.n + 1)

    @add.on_result
    def _add(self, data: D, result: D) -> D:
        return result

    @step(compensate=None)
    def remote(self, ctx: StepContext, data: D) -> None:
        return None


class WithDb(Saga[D]):
    type_name = "unit.local-db"

    @step(local=True, compensate=None)
    def write(self, ctx: StepContext, data: D) -> None:
        return None


def test_the_flag_is_recorded_and_drawn() -> None:
    assert Quick.node("add").local is True  # type: ignore[attr-defined]
    assert Quick.node("remote").local is False  # type: ignore[attr-defined]
    assert "local" in Quick.mermaid()
    assert has_local_steps(SagaRegistry([Quick]))
    assert not has_local_steps(SagaRegistry([]))


@pytest.mark.parametrize(
    ("option", "value"),
    [("to", "payments.tasks"), ("heartbeat_timeout", timedelta(seconds=5))],
)
def test_a_worker_only_setting_on_a_local_step_is_one_clear_error(
    option: str, value: object
) -> None:
    with pytest.raises(SagaDefinitionError) as caught:

        class Bad(Saga[D]):
            type_name = "unit.local-bad"

            @step(local=True, compensate=None, **{option: value})  # type: ignore[call-overload]
            def pay(self, ctx: StepContext, data: D) -> None:
                return None

    message = str(caught.value)
    assert "Bad.pay" in message and f"{option}=" in message and "local=True" in message
    assert "\n" not in message


def test_the_decider_dispatches_a_local_step_like_any_other() -> None:
    kit = SagaTestKit(Quick)
    kit.start(D(n=1))
    kit.succeed("add", D(n=2))
    kit.succeed("remote")
    assert kit.state is not None and kit.state.status == "completed"


def test_wiring_needs_a_database_only_for_local_database_steps() -> None:
    with pytest.raises(SagalineError, match="DATABASE_URL"):
        local_steps_for(SagaRegistry([WithDb]), None, "x.replies")
    unreachable = "postgresql://someone:hunter2@127.0.0.1:1/nowhere"
    with pytest.raises(SagalineError) as caught:
        local_steps_for(SagaRegistry([WithDb]), unreachable, "x.replies")
    assert "127.0.0.1:1/nowhere" in str(caught.value) and "hunter2" not in str(caught.value)
    runner = local_steps_for(SagaRegistry([Quick]), None, "x.replies")
    assert runner is not None
    runner.close()
    assert local_steps_for(SagaRegistry([]), None, "x.replies") is None


SNIPPET = """
from pydantic import BaseModel

from sagaline import Saga, StepContext, step


class Data(BaseModel):
    n: int = 0


class Count(BaseModel):
    n: int


class Local(Saga[Data]):
    type_name = "typing-local"

    @step(local=True, uses_db=False)
    def first(self, ctx: StepContext, data: Data) -> Count:
        return Count(n=data.n + 1)

    @first.on_result
    def _good(self, data: Data, result: Count) -> Data:
        return data.model_copy(update={"n": result.n})

    @first.on_result
    def _bad(self, data: Data, result: str) -> Data:  # error here
        return data
"""


def test_a_local_step_keeps_its_typed_hooks(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    (tmp_path / "sagaline").symlink_to(ROOT, target_is_directory=True)
    (tmp_path / "mypy.ini").write_text(
        f"[mypy]\nstrict = True\nmypy_path = {tmp_path}\nplugins = pydantic.mypy\n",
        encoding="utf-8",
    )
    (tmp_path / "snippet_local.py").write_text(SNIPPET, encoding="utf-8")
    config, cache = str(tmp_path / "mypy.ini"), str(tmp_path / "cache")
    out, err, _ = api.run(
        ["--config-file", config, "--cache-dir", cache, str(tmp_path / "snippet_local.py")]
    )
    lines = [int(m.group(1)) for m in re.finditer(r"snippet_local\.py:(\d+): error: ", out)]
    wrong = next(i for i, t in enumerate(SNIPPET.splitlines(), 1) if t.endswith("# error here"))
    assert "error: " not in err, err
    assert lines == [wrong - 1] or lines == [wrong], out
