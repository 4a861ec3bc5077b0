"""Run the maintainer-tool commands (``sagaline schemas|chaos|sagas|bench …``) in-process.

The commands are parsed by the same ``register`` functions the ``sagaline`` CLI
registers, so a test that runs ``schemas generate`` runs exactly what a shell does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sagaline.orchestrator.cli import bench_cmds, chaos_cmds, tool_cmds

__all__ = ["run_tool_command", "tool_parser"]


def tool_parser() -> argparse.ArgumentParser:
    """A parser with only the tool command groups."""
    parser = argparse.ArgumentParser(prog="sagaline")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    tool_cmds.register(subparsers)
    chaos_cmds.register(subparsers)
    bench_cmds.register(subparsers)
    return parser


def run_tool_command(argv: Sequence[str]) -> int:
    """Parse ``argv`` as ``sagaline <argv>`` and run its handler; its exit code."""
    args = tool_parser().parse_args(list(argv))
    code: int = args.handler(args)
    return code
