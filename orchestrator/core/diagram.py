"""Mermaid flowcharts of saga definitions (``RefundAgent.mermaid()``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sagaline.orchestrator.core.saga import (
    DONE,
    AgentSpec,
    ChildSpec,
    Node,
    ParallelSpec,
    Saga,
    SleepSpec,
    StepSpec,
    WaitSpec,
)

__all__ = ["to_mermaid"]

_END = "__end"
_COMPENSATE = "__compensate"
_FAIL = "__fail"


def _label(text: str) -> str:
    return text.replace('"', "'")


def _shape(node: Node) -> str:
    n = node.name
    if isinstance(node, StepSpec):
        marks = []
        if node.compensate_fn is not None:
            marks.append(f"undo: {node.compensate_fn.__name__}")
        if node.pivot:
            marks.append("pivot")
        if node.to:
            marks.append(f"to {node.to}")
        extra = f"<br/><small>{', '.join(marks)}</small>" if marks else ""
        return f'{n}["{_label(n)}{extra}"]'
    if isinstance(node, WaitSpec):
        timeout = f" ({_duration(node.timeout)})" if node.timeout else ""
        return f'{n}{{{{"{node.signal_kind}: {_label(n)}{timeout}"}}}}'
    if isinstance(node, SleepSpec):
        return f'{n}(["sleep: {_label(n)}"])'
    if isinstance(node, AgentSpec):
        tools = ", ".join(t.name + ("!" if t.risky else "") for t in node.tool_specs)
        detail = f"tools: {tools}; max {node.max_turns} turns"
        return f'{n}[["agent: {_label(n)}<br/><small>{detail}</small>"]]'
    if isinstance(node, ChildSpec):
        return f'{n}[/"child saga: {_label(node.definition.type_name)}"/]'
    return f'{n}["{_label(n)}"]'


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _target(name: str) -> str:
    return {"compensate": _COMPENSATE, "fail": _FAIL, DONE: _END}.get(name, name)


def to_mermaid(definition: type[Saga[Any]]) -> str:
    """A Mermaid ``flowchart TD`` of ``definition``: nodes, routes, waits' outcomes."""
    title = f"start: {_label(definition.type_name)} v{definition.version}"
    lines = ["flowchart TD", f'    __start(["{title}"])']
    seq = list(definition.sequence)
    used: set[str] = set()
    for node in seq:
        if isinstance(node, ParallelSpec):
            lines.append(f'    subgraph {node.name}["parallel: {_label(node.name)}"]')
            lines.extend(f"        {_shape(b)}" for b in node.branches)
            lines.append("    end")
        else:
            lines.append(f"    {_shape(node)}")
    lines.append(f'    {_END}(["completed"])')
    first = seq[0].name if seq else _END
    lines.append(f"    __start --> {first}")
    for i, node in enumerate(seq):
        nxt = seq[i + 1].name if i + 1 < len(seq) else _END
        if isinstance(node, WaitSpec):
            outcomes = [("approve", node.on_approve), ("reject", node.on_reject)]
            if node.signal_kind == "signal":
                outcomes = [("signal", node.on_approve)]
            outcomes.append(("timeout", node.on_timeout))
            for label, action in outcomes:
                target = nxt if action == "continue" else _target(action)
                used.add(target)
                lines.append(f"    {node.name} -- {label} --> {target}")
            continue
        lines.append(f"    {node.name} --> {nxt}")
        if isinstance(node, StepSpec):
            for target in node.route_targets:
                used.add(_target(target))
                lines.append(f"    {node.name} -. route .-> {_target(target)}")
        if not isinstance(node, WaitSpec):
            used.add(_COMPENSATE)
    if _COMPENSATE in used:
        lines.append(f'    {_COMPENSATE}(["compensate in reverse order"])')
    if _FAIL in used:
        lines.append(f'    {_FAIL}(["failed: needs a person"])')
    return "\n".join(lines) + "\n"
