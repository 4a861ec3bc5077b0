"""The core benchmarks measure what they claim (their figures are timing: not checked here)."""

from __future__ import annotations

import pytest

from sagaline.orchestrator.bench.core import measure, per_input
from sagaline.orchestrator.bench.long import agent_saga, linear_saga, record
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.replies import StepSucceeded

pytestmark = pytest.mark.unit


def test_recorded_runs_are_whole_sagas() -> None:
    steps = record(linear_saga(7), "r-1")
    assert isinstance(steps[0], StartSaga)
    assert [type(i) for i in steps[1:]] == [StepSucceeded] * 7
    turns = record(agent_saga(3), "r-2")
    # start, then per turn the LLM's call and the tool's result, then the answer
    assert len(turns) == 1 + 2 * 3 + 1


def test_measure_times_every_input_and_each_part() -> None:
    saga = linear_saga(5)
    figures = measure(saga, [record(saga, f"m-{i}") for i in range(3)], repeat=2)
    assert figures["inputs"] == 3 * 6
    # the per-input total is decide + journal + snapshot encoding (the entry's encoding
    # is shown apart); each input's part is at most its total, so each part's p50 is at
    # most the total's p50 (medians do not add, so their sum is not bounded by it)
    counted = ("decide_p50_us", "journal_p50_us", "snapshot_encode_p50_us")
    for part in counted:
        assert 0 < figures[part] <= figures["p50_us"], part
    assert figures["entry_encode_p50_us"] > 0
    assert figures["p90_us"] >= figures["p50_us"] > 0


def test_per_input_reports_against_the_goal() -> None:
    figures = per_input(2, repeat=1)
    assert figures["inputs"] == 2 * 6
    assert figures["goal_p50_us"] == 60.0
    assert figures["met"] == (float(figures["p50_us"]) <= 60.0)  # type: ignore[arg-type]
