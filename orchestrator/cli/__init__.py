"""The ``sagaline`` command line (console script ``orchestrator.cli:main``)."""

from orchestrator.cli.main import COMMAND_MODULES, build_parser, main

__all__ = ["COMMAND_MODULES", "build_parser", "main"]
