"""Every ```python block of docs/sagas.md runs, in page order, in one namespace."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "sagas.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_the_page_has_examples() -> None:
    assert len(blocks()) >= 8


def test_every_python_block_runs_in_order() -> None:
    namespace: dict[str, object] = {"__name__": "docs_sagas"}
    for number, code in enumerate(blocks(), start=1):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{DOC.name}[block {number}]", "exec"), namespace)
    registry = namespace["registry"]
    assert len(registry) == 5  # type: ignore[arg-type]


def test_the_diagram_on_the_page_matches_the_code() -> None:
    namespace: dict[str, object] = {"__name__": "docs_sagas"}
    exec(compile(blocks()[0], "block", "exec"), namespace)
    drawn = namespace["RefundAgent"].mermaid()  # type: ignore[attr-defined]
    text = DOC.read_text(encoding="utf-8")
    shown = text.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert drawn == shown
