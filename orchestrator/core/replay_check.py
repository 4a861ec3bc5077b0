"""Replay's rules, pure: timelines and the strict re-decide of recorded inputs.

With ``strict``, every recorded input is re-decided with the *current* saga
definitions:

    state before = fold of the recorded events of the entries before it
    re-decided   = decide(definition, state before, recorded input).events

and every entry whose re-decided events differ from the recorded ones is a
:class:`Divergence` (which saga, which entry and input, what differs).
:func:`replay_entries` works over entries already in memory; reading the
journal topic is :mod:`sagaline.orchestrator.replay`'s job.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, TypeGuard

from sagaline.orchestrator.core.decider import decide
from sagaline.orchestrator.core.errors import OrchestratorError
from sagaline.orchestrator.core.fold import fold
from sagaline.orchestrator.core.saga import Saga
from sagaline.orchestrator.core.timeline import SagaTimeline, build_timeline, describe_event
from sagaline.orchestrator.core.undecodable import Undecodable
from sagaline.schemas.events import SagaEvent, StateTrimmed
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.personal import KeyScope, ciphertext_paths, saga_keys
from sagaline.schemas.state import SagaState

__all__ = [
    "DefinitionLookup",
    "Divergence",
    "ReplayError",
    "ReplayReport",
    "check_saga",
    "decisions_only",
    "definition_lookup",
    "event_diff",
    "replay_entries",
]

#: (saga type, saga version) -> the definition, or None when there is none
DefinitionLookup = Callable[[str, int], type[Saga[Any]] | None]


class ReplayError(OrchestratorError):
    """Replay cannot run (for example the saga definitions cannot be loaded)."""


@dataclass
class Divergence:
    """Where current code decides differently from what a saga recorded."""

    saga_id: str
    saga_type: str
    saga_version: int
    seq: int
    input_type: str | None
    message_id: str | None
    problem: str
    recorded: list[str] = field(default_factory=list)
    redecided: list[str] = field(default_factory=list)
    diff: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        head = (
            f"saga {self.saga_id} ({self.saga_type} v{self.saga_version}) seq {self.seq} "
            f"input {self.input_type} [{self.message_id}]: {self.problem}"
        )
        return "\n".join([head, *(f"    {line}" for line in self.diff)])


@dataclass
class ReplayReport:
    """What a replay found: timelines, undecodable records and (strict) divergences."""

    topic: str
    sagas: list[SagaTimeline] = field(default_factory=list)
    undecodable: list[Undecodable] = field(default_factory=list)
    entries: int = 0
    strict: bool = False
    checked_inputs: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    #: sagas whose history starts after their first entry (``since``): not re-decided
    unverified: list[str] = field(default_factory=list)
    #: per saga whose data key is destroyed: its personal fields, unreadable (``Model.field``)
    erased: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """False when a strict replay found a divergence or an unreadable record."""
        if not self.strict:
            return True
        return not self.divergences and not self.undecodable

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "ok": self.ok,
            "strict": self.strict,
            "entries": self.entries,
            "saga_count": len(self.sagas),
            "checked_inputs": self.checked_inputs,
            "divergences": [d.to_dict() for d in self.divergences],
            "unverified": self.unverified,
            "erased": self.erased,
            "undecodable": [asdict(u) for u in self.undecodable],
            "sagas": [t.to_dict() for t in self.sagas],
        }


# -- definitions -------------------------------------------------------------------


def _is_saga_class(value: object) -> TypeGuard[type[Saga[Any]]]:
    return isinstance(value, type) and issubclass(value, Saga) and hasattr(value, "type_name")


def definition_lookup(source: object) -> DefinitionLookup:
    """A lookup over ``source``: a registry object with ``get``/``resolve``/``lookup``
    ``(type_name, version)``, a mapping keyed by ``(type_name, version)`` or by type
    name, an iterable of saga classes, or one saga class."""
    if _is_saga_class(source):
        return definition_lookup([source])
    for method in ("get", "resolve", "lookup", "definition"):
        fn = getattr(source, method, None)
        if callable(fn) and not isinstance(source, Mapping):
            return _method_lookup(fn)
    if isinstance(source, Mapping):
        return _mapping_lookup(source)
    if isinstance(source, Iterable):
        classes = [c for c in source if _is_saga_class(c)]
        by_key = {(c.type_name, c.version): c for c in classes}
        return lambda type_name, version: by_key.get((type_name, version))
    raise ReplayError(f"cannot look saga definitions up in a {type(source).__name__}")


def _method_lookup(fn: Callable[..., Any]) -> DefinitionLookup:
    def lookup(type_name: str, version: int) -> type[Saga[Any]] | None:
        try:
            found = fn(type_name, version)
        except (KeyError, LookupError, OrchestratorError):
            return None
        return found if _is_saga_class(found) else None

    return lookup


def _mapping_lookup(source: Mapping[Any, Any]) -> DefinitionLookup:
    def lookup(type_name: str, version: int) -> type[Saga[Any]] | None:
        found = source.get((type_name, version))
        if found is None:
            candidate = source.get(type_name)
            if _is_saga_class(candidate) and candidate.version == version:
                found = candidate
        return found if _is_saga_class(found) else None

    return lookup


# -- strict re-decide --------------------------------------------------------------


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _flatten(f"{prefix}.{key}" if prefix else str(key), value[key], out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _flatten(f"{prefix}[{i}]", item, out)
    else:
        out[prefix] = value


def _fields(event: SagaEvent) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _flatten("", event.model_dump(mode="json"), out)
    return out


def event_diff(recorded: Sequence[SagaEvent], redecided: Sequence[SagaEvent]) -> list[str]:
    """A readable difference between two event lists (empty when they are equal)."""
    lines: list[str] = []
    for i in range(max(len(recorded), len(redecided))):
        old = recorded[i] if i < len(recorded) else None
        new = redecided[i] if i < len(redecided) else None
        if old == new:
            continue
        if old is None:
            assert new is not None
            lines.append(f"event {i}: not recorded, now decided {describe_event(new)}")
        elif new is None:
            lines.append(f"event {i}: recorded {describe_event(old)}, now not decided")
        elif old.event != new.event:
            lines.append(
                f"event {i}: recorded {describe_event(old)}, now decided {describe_event(new)}"
            )
        else:
            a, b = _fields(old), _fields(new)
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    lines.append(
                        f"event {i} {old.event}.{key}: recorded {a.get(key)!r}, now {b.get(key)!r}"
                    )
    if not lines:
        return lines
    recorded_text = [describe_event(e) for e in recorded]
    redecided_text = [describe_event(e) for e in redecided]
    lines.extend(
        difflib.unified_diff(recorded_text, redecided_text, "recorded", "re-decided", lineterm="")
    )
    return lines


def check_saga(
    entries: Sequence[JournalEntry], lookup: DefinitionLookup
) -> tuple[int, list[Divergence]]:
    """Re-decide every recorded input of one saga; ``(inputs checked, divergences)``.

    ``entries`` must be the saga's whole history from seq 1.  After a
    divergence the check continues from the *recorded* state, so every
    divergent entry is reported, not only the first.
    """
    if not entries:
        return 0, []
    env = entries[0].envelope
    definition = lookup(env.saga_type, env.saga_version)
    if definition is None:
        return 0, [
            Divergence(
                env.saga_id,
                env.saga_type,
                env.saga_version,
                entries[0].seq,
                entries[0].input_type,
                None,
                f"no definition of {env.saga_type} version {env.saga_version} in the current "
                "code: in-flight sagas of this version cannot continue",
            )
        ]
    state: SagaState | None = None
    checked = 0
    found: list[Divergence] = []
    for entry in entries:
        if entry.input is not None:
            checked += 1
            divergence = _redecide(definition, state, entry)
            if divergence is not None:
                found.append(divergence)
        try:
            state = fold(entry.events, state)
        except Exception as exc:  # a journal that does not fold is itself a finding
            found.append(_divergence(entry, f"the recorded events do not fold: {exc}"))
            break
        if state is not None:
            state = state.model_copy(update={"journal_seq": entry.seq, "journal_hash": entry.hash})
    return checked, found


def _divergence(entry: JournalEntry, problem: str) -> Divergence:
    env = entry.envelope
    return Divergence(
        env.saga_id,
        env.saga_type,
        env.saga_version,
        entry.seq,
        entry.input_type,
        entry.input.envelope.message_id if entry.input is not None else None,
        problem,
        recorded=[describe_event(e) for e in entry.events],
    )


def _redecide(
    definition: type[Saga[Any]], state: SagaState | None, entry: JournalEntry
) -> Divergence | None:
    assert entry.input is not None
    try:
        decision = decide(definition, state, entry.input)
    except Exception as exc:  # current code crashing on a recorded input is a divergence
        found = _divergence(entry, f"current code raised {type(exc).__name__}: {exc}")
        found.diff = [f"the recorded decision was: {', '.join(found.recorded) or '(nothing)'}"]
        return found
    events = decisions_only(decision.events)
    recorded = decisions_only(entry.events)
    if events == recorded:
        return None
    found = _divergence(entry, "current code decides differently")
    found.redecided = [describe_event(e) for e in events]
    if decision.rejected is not None:
        found.redecided.append(f"(input rejected: {decision.rejected})")
    found.diff = event_diff(recorded, events)
    return found


def decisions_only(events: Iterable[SagaEvent]) -> list[SagaEvent]:
    """``events`` without ``StateTrimmed``: bookkeeping of the snapshot's size, not a
    decision (journals written before it existed have none, and nothing depends on it)."""
    return [e for e in events if not isinstance(e, StateTrimmed)]


# -- the replay ------------------------------------------------------------------------


def replay_entries(
    by_saga: Mapping[str, Sequence[JournalEntry]],
    *,
    topic: str = "",
    strict: bool = False,
    definitions: DefinitionLookup | None = None,
    undecodable: Iterable[Undecodable] = (),
    scopes: Callable[[str], KeyScope] | None = None,
) -> ReplayReport:
    """Timelines (and, with ``strict``, divergences) of sagas already read.

    ``scopes`` gives a saga's data-key scope (personal fields); a saga whose key is
    gone and that has encrypted values is listed in ``erased`` with those fields."""
    if strict and definitions is None:
        raise ReplayError("a strict replay needs the saga definitions")
    report = ReplayReport(topic=topic, strict=strict, undecodable=list(undecodable))
    for saga_id in sorted(by_saga):
        entries = by_saga[saga_id]
        if not entries:
            continue
        report.entries += len(entries)
        timeline = build_timeline(entries)
        report.sagas.append(timeline)
        scope = scopes(saga_id) if scopes is not None else None
        sealed = ciphertext_paths(list(entries)) if scope is not None else set()
        if sealed and scope is not None and scope.erased:
            report.erased[saga_id] = sorted(sealed)
        if not strict:
            continue
        if timeline.partial:
            report.unverified.append(saga_id)
            continue
        assert definitions is not None
        with saga_keys(scope) if scope is not None else nullcontext():
            checked, divergences = check_saga(entries, definitions)
        report.checked_inputs += checked
        report.divergences.extend(divergences)
    return report
