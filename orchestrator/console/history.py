"""A saga's page, from the journal: its entries, timeline, current state and diagram.

The entries are read once with :func:`~sagaline.orchestrator.runtime.journal_reader.read_journal`
(one partition, read_committed, to the last stable offset), folded into the
current :class:`SagaState` and turned into a timeline with
:func:`~sagaline.orchestrator.core.timeline.build_timeline`; the page is exact
the moment the orchestrator commits, without waiting for the projection.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sagaline.orchestrator.console.redact import payload_view
from sagaline.orchestrator.core.diagram import to_mermaid
from sagaline.orchestrator.core.fold import fold
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.timeline import (
    Attempt,
    SagaTimeline,
    build_timeline,
    describe_event,
)
from sagaline.orchestrator.runtime.journal_reader import read_journal
from sagaline.schemas.events import (
    AgentAnswered,
    AgentGaveUp,
    AgentObservation,
    AgentTurnRecorded,
    AgentTurnStarted,
    ToolCallRequested,
)
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.state import SagaState

__all__ = [
    "HistoryCache",
    "SagaHistory",
    "StepView",
    "actions_for",
    "build_history",
    "highlighted_diagram",
    "read_entries",
]

#: the Mermaid style of the node the saga is at
HIGHLIGHT = "fill:#ffe082,stroke:#e65100,stroke-width:3px"


@dataclass(frozen=True)
class StepView:
    """One step of the current state, as the page shows it."""

    name: str
    status: str
    attempt: int
    compensation: str
    last_error: str | None


@dataclass
class SagaHistory:
    """Everything the saga page shows."""

    state: SagaState
    timeline: SagaTimeline
    entries: list[JournalEntry]
    diagram: str | None
    diagram_node: str | None = None
    steps: list[StepView] = field(default_factory=list)
    data: Any = None
    actions: dict[str, list[str]] = field(default_factory=dict)
    agent_turns: list[dict[str, Any]] = field(default_factory=list)


def diagram_node(state: SagaState) -> str | None:
    """The diagram's node id for where the saga is (its node, or the end it reached)."""
    if state.status == "completed":
        return "__end"
    if state.status in ("compensating", "compensated"):
        return "__compensate"
    return state.node


def highlighted_diagram(registry: SagaRegistry | None, state: SagaState) -> str | None:
    """The definition's Mermaid flowchart with the current node styled (None if unknown)."""
    if registry is None:
        return None
    try:
        definition = registry.get(state.saga_type, state.saga_version)
    except Exception:  # an unknown type or version: the page says so
        return None
    text = to_mermaid(definition)
    node = diagram_node(state)
    if node:
        text += f"    style {node} {HIGHLIGHT}\n"
    return text


def diagram_lines(text: str, node: str | None) -> list[tuple[str, bool]]:
    """The diagram's lines, each with whether it declares, leaves or styles ``node``."""
    lines = []
    for line in text.rstrip("\n").splitlines():
        words = line.strip().replace("[", " ").replace("(", " ").replace("{", " ").split()
        styled = len(words) > 1 and words[0] == "style" and words[1] == node
        mark = node is not None and bool(words) and (words[0] == node or styled)
        lines.append((line, mark))
    return lines


def actions_for(state: SagaState) -> dict[str, list[str]]:
    """The operator actions that fit the state: action -> steps ([] for whole-saga actions)."""
    actions: dict[str, list[str]] = {}
    if state.is_terminal:
        return actions
    if state.status != "compensating":
        actions["cancel"] = []
    if state.status in ("running", "waiting"):
        actions["pause"] = []
    if state.status == "paused":
        actions["resume"] = []
    retry = [
        name
        for name, st in state.steps.items()
        if st.status in ("failed", "retry_wait") or st.compensation_status == "retry_wait"
    ]
    skip = [
        name
        for name, st in state.steps.items()
        if st.status in ("pending", "ready", "running", "retry_wait", "failed")
    ]
    if retry:
        actions["retry-step"] = retry
    if skip:
        actions["skip-step"] = skip
    return actions


def _steps(state: SagaState, timeline: SagaTimeline) -> list[StepView]:
    """Every step that ran, from the timeline, with the state's view where it still has one.

    The state retires finished steps that have nothing to undo (``StateTrimmed``),
    so the journal's attempts are the complete list.
    """
    last: dict[str, Attempt] = {}
    for attempt in timeline.attempts:
        last[attempt.step] = attempt
    undone = {c.step: c.outcome for c in timeline.compensations}
    views = []
    for name in [*last, *(n for n in state.steps if n not in last)]:
        st = state.steps.get(name)
        tried = last.get(name)
        views.append(
            StepView(
                name=name,
                status=st.status if st else (tried.outcome if tried else "pending"),
                attempt=st.attempt if st else (tried.attempt if tried else 0),
                compensation=st.compensation_status if st else undone.get(name, "none"),
                last_error=st.last_error if st else (tried.error if tried else None),
            )
        )
    return views


_AGENT_EVENTS = (
    AgentTurnStarted,
    AgentTurnRecorded,
    ToolCallRequested,
    AgentObservation,
    AgentAnswered,
    AgentGaveUp,
)


def _agent_turns(entries: list[JournalEntry]) -> list[dict[str, Any]]:
    """Every LLM turn and tool call of the saga's agents, from the journal (complete,
    unlike the state's transcript, which keeps only the agent's history window)."""
    turns: list[dict[str, Any]] = []
    for entry in entries:
        for event in entry.events:
            if isinstance(event, _AGENT_EVENTS):
                turns.append(
                    {
                        "at": event.at,
                        "agent": event.agent,
                        "turn": getattr(event, "turn", None),
                        "what": describe_event(event),
                    }
                )
    return turns


def read_entries(bootstrap: str, journal_topic: str, saga_id: str) -> list[JournalEntry]:
    """The saga's journal entries, read from its partition to the last stable offset."""
    read = read_journal(bootstrap, journal_topic, saga_id=saga_id, timeout=20.0)
    return read.by_saga().get(saga_id, [])


class HistoryCache:
    """The journal entries of recently viewed sagas, kept current by the journal follower.

    A saga's entries are read from the journal once (:func:`read_entries`);
    after that the follower appends each new entry (:meth:`append`), so a live
    refresh folds entries in memory instead of reading the partition again.
    An entry that does not follow the cached ones (a gap) drops the saga from
    the cache: the next view reads the journal again.
    """

    def __init__(self, bootstrap: str, journal_topic: str, size: int = 200) -> None:
        self.bootstrap = bootstrap
        self.journal_topic = journal_topic
        self.size = size
        self._entries: OrderedDict[str, list[JournalEntry]] = OrderedDict()
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def append(self, entry: JournalEntry) -> None:
        """Called by the follower for every committed entry."""
        saga_id = entry.envelope.saga_id
        with self._lock:
            self._seen[saga_id] = max(self._seen.get(saga_id, 0), entry.seq)
            cached = self._entries.get(saga_id)
            if cached is None or entry.seq <= cached[-1].seq:
                return
            if entry.seq == cached[-1].seq + 1:
                cached.append(entry)
            else:
                del self._entries[saga_id]

    def entries(self, saga_id: str) -> list[JournalEntry]:
        """The saga's entries (from memory when cached, else from the journal)."""
        with self._lock:
            cached = self._entries.get(saga_id)
            if cached is not None:
                self._entries.move_to_end(saga_id)
                return list(cached)
        entries = read_entries(self.bootstrap, self.journal_topic, saga_id)
        with self._lock:
            complete = bool(entries) and entries[-1].seq >= self._seen.get(saga_id, 0)
            if complete and saga_id not in self._entries:
                self._entries[saga_id] = list(entries)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return entries


def build_history(entries: list[JournalEntry], registry: SagaRegistry | None) -> SagaHistory | None:
    """The saga's page from its journal entries (None when there are none)."""
    if not entries:
        return None
    state: SagaState | None = None
    for entry in entries:
        state = fold(entry.events, state)
    if state is None:
        return None
    timeline = build_timeline(entries)
    return SagaHistory(
        state=state,
        timeline=timeline,
        entries=entries,
        diagram=highlighted_diagram(registry, state),
        diagram_node=diagram_node(state),
        steps=_steps(state, timeline),
        data=payload_view(state.data),
        actions=actions_for(state),
        agent_turns=_agent_turns(entries),
    )
