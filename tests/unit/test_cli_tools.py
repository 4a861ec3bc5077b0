"""The maintainer tools are subcommands of the one ``sagaline`` CLI (no ``python -m`` modules)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_tools import run_tool_command, tool_parser

from sagaline.orchestrator.cli.main import COMMAND_MODULES
from sagaline.orchestrator.core.errors import ConfigError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("orchestrator", "schemas", "consumers", "sagas")


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "orchestrator", "--partitions", "2"],
        ["bench", "core", "--sagas", "5"],
        ["bench", "codec", "--seconds", "0.1"],
        ["bench", "workers", "--paths", "kafka"],
        ["bench", "e2e", "--sagas", "3"],
        ["bench", "responder", "--prefix", "p"],
        ["schemas", "generate", "--check"],
        ["schemas", "check-compat", "--release", "v9"],
        ["sagas", "tables", "--schema", "app"],
        [
            "chaos", "worker", "--bootstrap", "b", "--dsn", "d", "--schema", "s",
            "--prefix", "p", "--table", "s.effects",
        ],
    ],
)  # fmt: skip
def test_every_tool_is_a_subcommand(argv: list[str]) -> None:
    args = tool_parser().parse_args(argv)
    assert callable(args.handler)


def test_the_cli_registers_the_tool_commands() -> None:
    assert "sagaline.orchestrator.cli.bench_cmds" in COMMAND_MODULES
    assert "sagaline.orchestrator.cli.tool_cmds" in COMMAND_MODULES


def test_bench_core_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_tool_command(["bench", "core", "--sagas", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "decider"
    assert report["sagas"] == 10 and report["inputs"] == 40
    assert report["events"] > report["inputs"]


def test_a_wrong_bench_path_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="--paths takes outbox and/or kafka"):
        run_tool_command(["bench", "workers", "--paths", "carrier-pigeon"])


def test_no_product_package_keeps_a_python_m_entry_point() -> None:
    found = [
        str(path.relative_to(ROOT))
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        if (path.name == "__main__.py" and path.parent.name != "cli")
        or 'if __name__ == "__main__"' in path.read_text(encoding="utf-8")
    ]
    assert found == []
