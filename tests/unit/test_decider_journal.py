"""The journal: hash chain, tamper detection, JSON round trip, fold equals snapshot."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.decider import pending_timers, timer_input
from sagaline.orchestrator.core.fold import fold
from sagaline.orchestrator.core.journal import (
    entry_hash,
    fold_journal,
    make_journal_entry,
    verify_chain,
)
from sagaline.orchestrator.core.saga import Saga, approval, step
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.schemas.journal import GENESIS_HASH, JournalEntry
from sagaline.schemas.state import is_terminal

pytestmark = pytest.mark.unit


class Doc(BaseModel):
    title: str
    version: int = 0


class Saved(BaseModel):
    version: int


class Publish(Saga[Doc]):
    type_name = "publish"

    @step
    def save(self, ctx: StepContext, data: Doc) -> Saved:
        return Saved(version=data.version + 1)

    @save.on_result
    def _saved(self, data: Doc, result: Saved) -> Doc:
        return data.model_copy(update={"version": result.version})

    @save.compensation
    def unsave(self, ctx: StepContext, data: Doc) -> None:
        return None

    editor_ok = approval(timeout=timedelta(days=1))


def journaled() -> SagaTestKit[Doc]:
    kit = SagaTestKit(Publish, saga_id="doc-1")
    kit.start(Doc(title="t"))
    kit.succeed("save", Saved(version=3))
    kit.reject("editor_ok", by="ed")
    kit.expect_compensations(["save"])
    kit.expect_status("compensated")
    return kit


def test_entries_chain_from_genesis_and_verify() -> None:
    kit = journaled()
    assert [e.seq for e in kit.journal] == list(range(1, len(kit.journal) + 1))
    assert kit.journal[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(kit.journal, kit.journal[1:], strict=False))
    assert verify_chain(kit.journal) == []
    assert kit.state is not None
    assert kit.state.journal_seq == kit.journal[-1].seq
    assert kit.state.journal_hash == kit.journal[-1].hash


def test_tampering_and_gaps_are_found() -> None:
    kit = journaled()
    entries = list(kit.journal)
    forged = entries[1].model_copy(update={"events": entries[1].events[:-1]})
    problems = verify_chain([entries[0], forged, *entries[2:]])
    assert any("hash does not match" in p for p in problems)
    problems = verify_chain([entries[0], *entries[2:]])
    assert any("expected seq 2" in p for p in problems)
    assert any("prev_hash" in p for p in problems)


def test_json_round_trip_keeps_the_hash() -> None:
    kit = journaled()
    for entry in kit.journal:
        again = JournalEntry.model_validate_json(entry.model_dump_json())
        assert again == entry
        assert type(again.input) is type(entry.input)
        assert entry_hash(again) == entry.hash


def test_fold_of_the_journal_is_the_snapshot_at_every_point() -> None:
    kit = journaled()
    for n in range(1, len(kit.journal) + 1):
        folded = fold_journal(kit.journal[:n])
        assert folded is not None and folded.journal_seq == n
    events = [e for entry in kit.journal for e in entry.events]
    plain = fold(events)
    assert plain is not None and kit.state is not None
    assert plain == kit.state.model_copy(update={"journal_seq": 0, "journal_hash": ""})
    assert is_terminal(kit.state) and pending_timers(kit.state) == []


def test_make_entry_continues_the_chain_of_the_state() -> None:
    kit = SagaTestKit(Publish, saga_id="doc-2")
    kit.start(Doc(title="t"))
    kit.succeed("save", Saved(version=1))
    state = kit.state
    assert state is not None
    timer = pending_timers(state)[0]
    fired = timer_input(state, timer, timer.due_at)
    assert fired.envelope.message_id == timer_input(state, timer, timer.due_at).envelope.message_id
    entry = make_journal_entry(state, fired, [])
    assert entry.seq == state.journal_seq + 1 and entry.prev_hash == state.journal_hash
    assert entry.envelope.causation_id == fired.envelope.message_id
