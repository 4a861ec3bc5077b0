"""Lead enrichment: one step per contact, run in parallel, then joined.

A batch holds up to :data:`MAX_CONTACTS` contacts.  The saga fans out one
step per contact slot (``enrich_1`` … ``enrich_4``, joined by the parallel
node ``enrich_contacts``); each looks the contact's company up in the
enrichment provider (:data:`COMPANY_DIRECTORY`, local and deterministic),
scores the lead and writes the enriched row through ``ctx.db``.  A slot
beyond the batch's size has nothing to do and returns at once.  The join,
``rank_batch``, records the batch summary.

A provider that is rate-limiting (the ``flaky.example`` domain) fails the
first attempts with a retryable error; the step's retry policy retries it.
A provider that stays down (``down.example``) exhausts the retries and the
saga compensates: the rows of the contacts already enriched are deleted.

The slots are fixed because the definition API fans out over steps declared
in the class (``parallel(...)``); a batch larger than :data:`MAX_CONTACTS`
is split into several sagas by the caller (:func:`batches`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta

from pydantic import BaseModel, Field

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import RetryableError, TerminalError
from sagaline.orchestrator.core.policies import Retry
from sagaline.orchestrator.core.saga import Saga, StepSpec, parallel, step
from sagaline.sagas.tables import Tables

__all__ = [
    "COMPANY_DIRECTORY",
    "MAX_CONTACTS",
    "BatchRanked",
    "Contact",
    "EnrichedContact",
    "LeadBatch",
    "LeadEnrichment",
    "batches",
    "enrich",
]

MAX_CONTACTS = 4

#: What the enrichment provider knows: domain -> (company, industry, employees).
COMPANY_DIRECTORY: dict[str, tuple[str, str, int]] = {
    "acme.example": ("Acme Corp", "manufacturing", 1200),
    "globex.example": ("Globex", "energy", 8000),
    "initech.example": ("Initech", "software", 350),
    "umbrella.example": ("Umbrella", "pharma", 15000),
    "hooli.example": ("Hooli", "software", 40000),
    "flaky.example": ("Flaky Ltd", "retail", 90),
}

#: Domains whose provider answers "try again" this many times before answering.
RATE_LIMITED = {"flaky.example": 2}
#: Domains whose provider never answers.
UNAVAILABLE = frozenset({"down.example"})

_RETRY = Retry(
    max_attempts=4,
    initial=timedelta(milliseconds=300),
    max_interval=timedelta(seconds=2),
    non_retryable=(TerminalError,),
)


class Contact(BaseModel):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    name: str


class EnrichedContact(BaseModel):
    """Result of one contact step (``skipped``: the slot had no contact)."""

    slot: int
    email: str = ""
    company: str = ""
    industry: str = ""
    employees: int = 0
    score: int = 0
    skipped: bool = False


class LeadBatch(BaseModel):
    """The saga data: the contacts, and their enrichment as it arrives."""

    batch_id: str
    contacts: list[Contact] = Field(min_length=1, max_length=MAX_CONTACTS)
    enriched: list[EnrichedContact] = Field(default_factory=list)
    top_email: str | None = None


class BatchRanked(BaseModel):
    enriched: int
    top_email: str | None


def enrich(contact: Contact, attempt: int) -> tuple[str, str, int, int]:
    """Ask the provider about the contact's company: (company, industry, employees, score)."""
    domain = contact.email.rpartition("@")[2].lower()
    if domain in UNAVAILABLE:
        raise RetryableError(f"enrichment provider unavailable for {domain}")
    if attempt <= RATE_LIMITED.get(domain, 0):
        raise RetryableError(f"enrichment provider rate-limited {domain} (attempt {attempt})")
    found = COMPANY_DIRECTORY.get(domain)
    if found is None:
        raise TerminalError(f"the provider knows no company at {domain}")
    company, industry, employees = found
    score = min(100, 20 + employees // 500 + (30 if industry == "software" else 10))
    return company, industry, employees, score


def _contact_step(slot: int) -> StepSpec[LeadBatch, EnrichedContact]:
    """The step of contact slot ``slot`` (1-based), with its compensation and fold."""

    def run(self: object, ctx: StepContext, data: LeadBatch) -> EnrichedContact:
        if slot > len(data.contacts):
            return EnrichedContact(slot=slot, skipped=True)
        contact = data.contacts[slot - 1]
        company, industry, employees, score = enrich(contact, ctx.attempt)
        t = Tables.current()
        ctx.db.execute(
            f"INSERT INTO {t.leads} (idempotency_key, saga_id, batch_id, email, name, company,"
            " industry, employees, score) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                ctx.idempotency_key,
                ctx.saga_id,
                data.batch_id,
                contact.email,
                contact.name,
                company,
                industry,
                employees,
                score,
            ),
        )
        return EnrichedContact(
            slot=slot,
            email=contact.email,
            company=company,
            industry=industry,
            employees=employees,
            score=score,
        )

    run.__doc__ = f"Enrich contact {slot} of the batch and store the lead."
    spec = step(name=f"enrich_{slot}", retry=_RETRY, result=EnrichedContact)(run)

    @spec.compensation
    def remove(self: object, ctx: StepContext, data: LeadBatch) -> None:
        if slot > len(data.contacts):
            return
        t = Tables.current()
        ctx.db.execute(
            f"DELETE FROM {t.leads} WHERE saga_id = %s AND email = %s",
            (ctx.saga_id, data.contacts[slot - 1].email),
        )

    @spec.on_result
    def fold(self: object, data: LeadBatch, result: EnrichedContact) -> LeadBatch:
        if result.skipped:
            return data
        kept = [e for e in data.enriched if e.slot != slot]
        return data.model_copy(update={"enriched": sorted([*kept, result], key=lambda e: e.slot)})

    return spec


class LeadEnrichment(Saga[LeadBatch]):
    """Enrich every contact of a batch at once, then rank the batch."""

    type_name = "lead_enrichment"

    enrich_1 = _contact_step(1)
    enrich_2 = _contact_step(2)
    enrich_3 = _contact_step(3)
    enrich_4 = _contact_step(4)
    enrich_contacts = parallel(enrich_1, enrich_2, enrich_3, enrich_4)

    @step(compensate=None, retry=_RETRY)
    def rank_batch(self, ctx: StepContext, data: LeadBatch) -> BatchRanked:
        """Record the batch summary: how many leads, and the best one."""
        best = max(data.enriched, key=lambda e: (e.score, e.email), default=None)
        top = best.email if best is not None else None
        t = Tables.current()
        ctx.db.execute(
            f"INSERT INTO {t.lead_batches} (saga_id, idempotency_key, batch_id, enriched,"
            " top_email) VALUES (%s, %s, %s, %s, %s)",
            (ctx.saga_id, ctx.idempotency_key, data.batch_id, len(data.enriched), top),
        )
        return BatchRanked(enriched=len(data.enriched), top_email=top)

    @rank_batch.on_result
    def _ranked(self, data: LeadBatch, result: BatchRanked) -> LeadBatch:
        return data.model_copy(update={"top_email": result.top_email})


def batches(batch_id: str, contacts: Sequence[Contact]) -> Iterator[LeadBatch]:
    """Split ``contacts`` into saga inputs of at most :data:`MAX_CONTACTS` each."""
    for i in range(0, len(contacts), MAX_CONTACTS):
        yield LeadBatch(
            batch_id=f"{batch_id}-{i // MAX_CONTACTS + 1}",
            contacts=list(contacts[i : i + MAX_CONTACTS]),
        )
