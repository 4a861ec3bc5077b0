"""Lead enrichment: fan out one step per contact, join, retry a flaky contact, compensate."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sagaline.orchestrator.core.errors import RetryableError, TerminalError
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.sagas.enrichment import (
    MAX_CONTACTS,
    BatchRanked,
    Contact,
    EnrichedContact,
    LeadBatch,
    LeadEnrichment,
    batches,
    enrich,
)

pytestmark = pytest.mark.unit

SLOTS = [f"enrich_{i}" for i in range(1, MAX_CONTACTS + 1)]


def _batch(*emails: str) -> LeadBatch:
    return LeadBatch(
        batch_id="b-1", contacts=[Contact(email=e, name=e.split("@")[0]) for e in emails]
    )


def _enriched(slot: int, email: str, score: int) -> EnrichedContact:
    return EnrichedContact(slot=slot, email=email, company="c", industry="i", score=score)


def test_fans_out_one_step_per_contact_and_joins() -> None:
    kit = SagaTestKit(LeadEnrichment)
    kit.start(_batch("ann@acme.example", "bob@hooli.example", "cy@globex.example"))
    kit.expect_tasks(SLOTS)
    kit.succeed("enrich_2", _enriched(2, "bob@hooli.example", 90))
    kit.succeed("enrich_1", _enriched(1, "ann@acme.example", 40))
    kit.succeed("enrich_4", EnrichedContact(slot=4, skipped=True))
    kit.expect_tasks(["enrich_3"])
    kit.succeed("enrich_3", _enriched(3, "cy@globex.example", 50))
    kit.expect_tasks(["rank_batch"])
    assert [e.slot for e in kit.data.enriched] == [1, 2, 3]
    kit.succeed("rank_batch", BatchRanked(enriched=3, top_email="bob@hooli.example"))
    kit.expect_status("completed")
    assert kit.data.top_email == "bob@hooli.example"


def test_a_flaky_contact_is_retried_with_the_same_idempotency_key() -> None:
    kit = SagaTestKit(LeadEnrichment)
    kit.start(_batch("ann@acme.example", "fay@flaky.example"))
    first = kit.expect_task("enrich_2")
    kit.fail("enrich_2", "rate-limited")
    kit.advance(seconds=1)
    second = kit.expect_task("enrich_2")
    assert second.attempt == 2
    assert second.idempotency_key == first.idempotency_key
    kit.fail("enrich_2", "rate-limited")
    kit.advance(seconds=2)
    kit.succeed("enrich_2", _enriched(2, "fay@flaky.example", 30))
    kit.succeed("enrich_1", _enriched(1, "ann@acme.example", 40))
    for slot in SLOTS[2:]:
        kit.succeed(slot, EnrichedContact(slot=int(slot[-1]), skipped=True))
    kit.expect_tasks(["rank_batch"])


def test_a_contact_that_keeps_failing_compensates_the_enriched_ones() -> None:
    kit = SagaTestKit(LeadEnrichment)
    kit.start(_batch("ann@acme.example", "dan@down.example"))
    kit.succeed("enrich_1", _enriched(1, "ann@acme.example", 40))
    kit.succeed("enrich_3", EnrichedContact(slot=3, skipped=True))
    kit.succeed("enrich_4", EnrichedContact(slot=4, skipped=True))
    for _ in range(3):
        kit.fail("enrich_2", "provider unavailable")
        kit.advance(seconds=5)
    kit.fail("enrich_2", "provider unavailable")
    # Completed slots are undone one at a time, in reverse order of completion.
    kit.expect_compensations(["enrich_4", "enrich_3", "enrich_1"])
    kit.expect_status("compensated")
    assert "enrich_2" not in kit.compensated_steps()


def test_the_provider_is_deterministic() -> None:
    ann = Contact(email="ann@acme.example", name="Ann")
    assert enrich(ann, 1) == ("Acme Corp", "manufacturing", 1200, 32)
    fay = Contact(email="fay@flaky.example", name="Fay")
    for attempt in (1, 2):
        with pytest.raises(RetryableError):
            enrich(fay, attempt)
    assert enrich(fay, 3)[0] == "Flaky Ltd"
    with pytest.raises(TerminalError):
        enrich(Contact(email="x@unknown.example", name="X"), 1)


def test_batches_split_and_validate() -> None:
    contacts = [Contact(email=f"p{i}@acme.example", name=f"p{i}") for i in range(9)]
    split = list(batches("big", contacts))
    assert [len(b.contacts) for b in split] == [4, 4, 1]
    assert [b.batch_id for b in split] == ["big-1", "big-2", "big-3"]
    with pytest.raises(ValidationError):
        LeadBatch(batch_id="x", contacts=contacts)
