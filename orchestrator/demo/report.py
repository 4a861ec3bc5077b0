"""The demo's report for a person: an aligned table (``rich``), checks, what to try next."""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sagaline.orchestrator.demo.checks import Check, SagaOutcome

__all__ = ["outcome_table", "render_checks", "sagaline_on_path"]


def sagaline_on_path() -> str:
    """How to type ``sagaline`` here: the bare name when it is on PATH, else its path."""
    script = Path(sys.executable).parent / "sagaline"
    found = shutil.which("sagaline")
    if found and Path(found).resolve() == script.resolve():
        return "sagaline"
    try:
        return os.path.relpath(script)
    except ValueError:  # another drive (Windows)
        return str(script)


def _to_text(table: Table) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None, soft_wrap=True).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def outcome_table(outcomes: Sequence[SagaOutcome]) -> str:
    """One row per saga: what the demo did to it, how it ended, its LLM use."""
    table = Table(box=None, pad_edge=False, show_edge=False)
    table.add_column("saga")
    table.add_column("what happened")
    table.add_column("status")
    table.add_column("LLM calls", justify="right")
    table.add_column("tokens", justify="right")
    table.add_column("reason")
    for o in outcomes:
        mark = "" if o.status == o.expected else f"  <-- expected {o.expected}"
        table.add_row(
            o.saga_id, o.action, o.status, str(o.llm_calls), str(o.tokens), (o.reason or "") + mark
        )
    return _to_text(table)


def render_checks(checks: Sequence[Check]) -> list[str]:
    """``ok``/``FAIL`` per check, aligned."""
    width = max((len(c.name) for c in checks), default=0)
    return [f"  {'ok  ' if c.ok else 'FAIL'} {c.name:<{width}}  {c.detail}" for c in checks]
