"""What the orchestrator does with batches that keep aborting.

A batch whose transaction aborts is retried.  After two aborts in a row the
inputs are decided one per transaction (*isolation*), so that a single input
(or due timer) whose decision can never be committed — an output the broker
refuses, for example — is found.  Such an item escalates, one step per
failed transaction of its own:

1. ``decide`` — decided as usual (twice);
2. ``dead_letter`` — not decided; a bounded dead letter (which always fits)
   records it, with the reason of the last abort;
3. ``skip`` — even that letter did not commit: the item is consumed without
   any output and logged at ERROR.  This last step always terminates: a
   transaction that only moves offsets cannot be refused because of the input.

Only an abort in which a record was **refused** for good (too large, invalid:
``transactions.refused_for_good``) counts.  Any other abort — an out-of-order
sequence number or an epoch bump after an earlier abort, a transaction the
coordinator timed out, a broker outage, a re-created producer — says nothing
about the items: it is neither counted nor blamed, and the items are decided
again, as they are, until they commit.  Verdicts reset when a transaction
containing the item commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence
from enum import Enum

__all__ = ["AbortPolicy", "Verdict"]

log = logging.getLogger(__name__)

#: an input is (topic, partition, offset); a timer is ("#timer", saga_id, timer_id)
ItemKey = tuple[str, str | int, str | int]


class Verdict(Enum):
    """How to treat one input or timer in the next transaction."""

    DECIDE = "decide"
    DEAD_LETTER = "dead_letter"
    SKIP = "skip"


#: failed transactions of an item alone before it is dead-lettered, then skipped
_DEAD_LETTER_AFTER = 2
_SKIP_AFTER = 3


class AbortPolicy:
    """Consecutive aborts, isolation, and the escalation of items that never commit."""

    def __init__(self) -> None:
        self.aborts = 0
        #: how many items are still to be decided one per transaction
        self.isolate = 0
        self._failures: dict[Hashable, int] = {}
        self._reasons: dict[Hashable, str] = {}

    def verdict(self, key: Hashable) -> Verdict:
        """How ``key`` is to be treated now."""
        failures = self._failures.get(key, 0)
        if failures >= _SKIP_AFTER:
            return Verdict.SKIP
        if failures >= _DEAD_LETTER_AFTER:
            return Verdict.DEAD_LETTER
        return Verdict.DECIDE

    def reason(self, key: Hashable) -> str:
        """Why the transactions of ``key`` aborted (the last abort's reason)."""
        return self._reasons.get(key, "")

    def committed(self, keys: Sequence[Hashable]) -> None:
        """A transaction with ``keys`` committed: their history is forgotten."""
        self.aborts = 0
        self.isolate = max(0, self.isolate - len(keys))
        for key in keys:
            self._failures.pop(key, None)
            self._reasons.pop(key, None)

    def aborted(self, keys: Sequence[Hashable], reason: str, *, refused: bool) -> None:
        """A transaction with ``keys`` aborted with ``reason``; ``refused`` when a record of
        it was refused for good (the only abort that may be an item's fault)."""
        if not refused:
            log.info("%d item(s) to decide again: %s", len(keys), reason)
            return
        self.aborts += 1
        if len(keys) == 1:
            key = keys[0]
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            self._reasons[key] = reason
            if failures == _SKIP_AFTER:
                log.error(
                    "%s cannot be committed even as a dead letter (%s): skipping", key, reason
                )
        elif self.aborts >= 2:
            # the same batch failed twice: decide its items one per transaction
            self.isolate = max(self.isolate, len(keys))

    def forget(self, gone: Callable[[Hashable], bool]) -> None:
        """Drop the history of items for which ``gone`` is true (revoked partitions)."""
        for key in [k for k in self._failures if gone(k)]:
            self._failures.pop(key, None)
            self._reasons.pop(key, None)

    def reset(self) -> None:
        """A rebalance: no batch is in progress any more."""
        self.aborts = self.isolate = 0
