"""The audit's check of journal-entry signatures (docs/security.md).

With signing on, the orchestrator signs every journal entry it writes
(:class:`~sagaline.orchestrator.runtime.signing_runtime.SignedProducer`).  The audit
verifies each entry it reads against the keyring: an entry without a signature, with
a signature that does not match its topic, key and value, by a key the keyring does
not hold, or by a signer that is not one of ``SAGALINE_ORCHESTRATOR_SIGNERS`` is a
finding.  The rules of the other checks stay pure (``core/audit_rules``); this one
needs the raw record, so it runs where the journal is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sagaline.orchestrator.runtime.errors import InputRejected
from sagaline.orchestrator.runtime.signing_runtime import signing_config, verify_record
from sagaline.orchestrator.runtime.stable_read import RawRecord

__all__ = ["SignatureCheck", "SignatureProblem", "signature_check"]

#: the name of the audit check (beside ``core.audit_rules.CHECKS``)
CHECK = "signature"
DESCRIPTION = "every journal entry signed by an orchestrator signer (SAGALINE_ORCHESTRATOR_SIGNERS)"


@dataclass(frozen=True)
class SignatureProblem:
    """One journal record whose signature does not verify."""

    partition: int
    offset: int
    key: str | None
    error_type: str
    reason: str


@dataclass
class SignatureCheck:
    """Verifies the signature of every journal record it is given."""

    topic: str
    allowed: frozenset[str]
    checked: int = 0
    problems: list[SignatureProblem] = field(default_factory=list)

    def __call__(self, record: RawRecord) -> None:
        self.checked += 1
        try:
            verify_record(
                self.topic, record.key, record.value, record.headers, self.allowed, "journal entry"
            )
        except InputRejected as exc:
            self.problems.append(
                SignatureProblem(
                    record.partition, record.offset, record.text_key, exc.error_type, exc.reason
                )
            )


def signature_check(topic: str) -> SignatureCheck | None:
    """A check of ``topic``'s signatures, or ``None`` when signing is off."""
    config = signing_config()
    if not config.enabled:
        return None
    return SignatureCheck(topic, config.orchestrator_signers)
