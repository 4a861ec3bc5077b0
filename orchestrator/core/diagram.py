"""Mermaid flowcharts of saga definitions (``RefundAgent.mermaid()``).

Each node kind draws its own fragment (``NodeKind.mermaid_nodes`` and
``NodeKind.mermaid_edges``); this module lays them out.
"""

from __future__ import annotations

from typing import Any

from sagaline.orchestrator.core.nodes import DONE, kind_of
from sagaline.orchestrator.core.nodes.base import mermaid_label
from sagaline.orchestrator.core.saga import Saga

__all__ = ["to_mermaid"]

_END = "__end"
_COMPENSATE = "__compensate"
_FAIL = "__fail"


def _target(name: str) -> str:
    return {"compensate": _COMPENSATE, "fail": _FAIL, DONE.name: _END}.get(name, name)


def to_mermaid(definition: type[Saga[Any]]) -> str:
    """A Mermaid ``flowchart TD`` of ``definition``: nodes, routes, waits' outcomes."""
    title = f"start: {mermaid_label(definition.type_name)} v{definition.version}"
    lines = ["flowchart TD", f'    __start(["{title}"])']
    seq = list(definition.sequence)
    used: set[str] = set()
    for node in seq:
        lines.extend(f"    {line}" for line in kind_of(node).mermaid_nodes(node))
    lines.append(f'    {_END}(["completed"])')
    first = seq[0].name if seq else _END
    lines.append(f"    __start --> {first}")
    for i, node in enumerate(seq):
        kind = kind_of(node)
        following = seq[i + 1].name if i + 1 < len(seq) else _END
        for edge in kind.mermaid_edges(node, following, _target):
            used.add(edge.rsplit(" ", 1)[-1])
            lines.append(f"    {edge}")
        if kind.may_compensate(node):
            used.add(_COMPENSATE)
    if _COMPENSATE in used:
        lines.append(f'    {_COMPENSATE}(["compensate in reverse order"])')
    if _FAIL in used:
        lines.append(f'    {_FAIL}(["failed: needs a person"])')
    return "\n".join(lines) + "\n"
