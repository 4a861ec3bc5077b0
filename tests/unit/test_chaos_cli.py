"""``sagaline chaos``: the storm suite's command line (the storm: tests/chaos/test_storm.py)."""

from __future__ import annotations

import random

import pytest
from cli_tools import run_tool_command, tool_parser

from sagaline.orchestrator.chaos.flood import Flood
from sagaline.orchestrator.cli.main import COMMAND_MODULES
from sagaline.orchestrator.runtime.partitioner import partition_for

pytestmark = pytest.mark.unit


def test_chaos_is_registered_and_runs_the_storm_without_a_role() -> None:
    assert "sagaline.orchestrator.cli.chaos_cmds" in COMMAND_MODULES
    args = tool_parser().parse_args(["chaos", "--sagas", "10000", "--seed", "3"])
    assert args.handler.__name__ == "_storm" and args.sagas == 10000 and args.seed == 3
    worker = tool_parser().parse_args(
        ["chaos", "relay", "--bootstrap", "b", "--dsn", "d", "--schema", "s", "--prefix", "p",
         "--table", "t"]
    )  # fmt: skip
    assert worker.handler.__name__ == "_chaos_process" and worker.role == "relay"


def test_too_few_sagas_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_tool_command(["chaos", "--sagas", "3"]) == 2
    err = capsys.readouterr().err
    assert err == "sagaline: error: --sagas must be at least 10\n"


def test_misrouted_input_really_goes_to_another_partition() -> None:
    flood = Flood.__new__(Flood)  # only the partition arithmetic, no Kafka
    flood.partitions = 6
    flood._rng = random.Random(1)
    for n in range(200):
        key = f"saga-{n}"
        wrong = flood._other_partition(key)
        assert 0 <= wrong < 6 and wrong != partition_for(key, 6)
