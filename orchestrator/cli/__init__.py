"""The ``sagaline`` command line (console script ``sagaline.orchestrator.cli:main``)."""

from sagaline.orchestrator.cli.main import COMMAND_MODULES, build_parser, main

__all__ = ["COMMAND_MODULES", "build_parser", "main"]
