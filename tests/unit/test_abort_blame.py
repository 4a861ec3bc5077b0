"""Issue 17: only a record refused for good is ever blamed on an input.

An abort caused by the producer's or the cluster's state (an out-of-order sequence number
after an earlier abort, an epoch bump, a timeout, a fenced or failed producer) must never
escalate an input towards its dead letter or its skip: before this, a lone ok input whose
transactions aborted that way twice was dead-lettered, three times consumed without output.
The relay and the worker sort delivery errors by the same rule (a delivery report's error
carries no retriable or fatal flag: the code is all there is).
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from sagaline.consumers.relay import _refused_for_good as relay_refused
from sagaline.orchestrator.runtime.poison import AbortPolicy, Verdict
from sagaline.orchestrator.runtime.transactions import (
    SUSPECT_AFTER,
    blame_suspects,
    is_fatal,
    refused_for_good,
    suspect,
)

pytestmark = pytest.mark.unit

REFUSED = [
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.POLICY_VIOLATION,
]
NOT_THE_RECORD = [
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.PRODUCER_FENCED,
    KafkaError._FENCED,
    KafkaError._FATAL,
    KafkaError._STATE,
    KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT,
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
]


def test_aborts_that_are_not_refusals_never_escalate_a_lone_input() -> None:
    policy = AbortPolicy()
    key = ("t.commands", 0, 7)
    for _ in range(10):
        policy.aborted([key], "OUT_OF_ORDER_SEQUENCE_NUMBER", refused=False)
        assert policy.verdict(key) is Verdict.DECIDE
    assert (policy.aborts, policy.isolate) == (0, 0)


def test_only_refused_aborts_count_towards_the_dead_letter() -> None:
    policy = AbortPolicy()
    key = ("t.commands", 1, 3)
    policy.aborted([key], "MSG_SIZE_TOO_LARGE", refused=True)
    policy.aborted([key], "_STATE", refused=False)
    policy.aborted([key], "OUT_OF_ORDER_SEQUENCE_NUMBER", refused=False)
    assert policy.verdict(key) is Verdict.DECIDE
    policy.aborted([key], "MSG_SIZE_TOO_LARGE", refused=True)
    assert policy.verdict(key) is Verdict.DEAD_LETTER
    assert policy.reason(key) == "MSG_SIZE_TOO_LARGE"


def test_a_batch_is_isolated_only_after_two_refused_aborts() -> None:
    policy = AbortPolicy()
    keys = [("t", 0, i) for i in range(4)]
    for _ in range(5):
        policy.aborted(keys, "INVALID_PRODUCER_EPOCH", refused=False)
    assert policy.isolate == 0
    policy.aborted(keys, "MSG_SIZE_TOO_LARGE", refused=True)
    policy.aborted(keys, "MSG_SIZE_TOO_LARGE", refused=True)
    assert policy.isolate == 4


@pytest.mark.parametrize("code", REFUSED)
def test_a_record_refused_for_good(code: int) -> None:
    assert refused_for_good(KafkaError(code))
    assert relay_refused(KafkaError(code))
    assert not refused_for_good(KafkaError(code, fatal=True))


@pytest.mark.parametrize("code", NOT_THE_RECORD)
def test_errors_of_the_producer_or_cluster_are_not_refusals(code: int) -> None:
    # the relay marked such rows sent after "dead-lettering" them: a reply lost
    assert not refused_for_good(KafkaError(code))
    assert not relay_refused(KafkaError(code))


def test_the_relay_still_dead_letters_a_row_for_a_topic_that_does_not_exist() -> None:
    assert relay_refused(KafkaError(KafkaError._UNKNOWN_TOPIC))
    assert not refused_for_good(KafkaError(KafkaError._UNKNOWN_TOPIC))


def test_fatal_includes_calls_on_a_failed_client() -> None:
    assert is_fatal(KafkaError(KafkaError._FATAL))
    assert is_fatal(KafkaError(KafkaError._FENCED, fatal=True))
    assert not is_fatal(KafkaError(KafkaError._STATE))


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    ],
)
def test_a_missing_or_forbidden_topic_is_blamed_only_when_it_lasts(code: int) -> None:
    # a step's to= topic that does not exist, or that the orchestrator may not write:
    # never blamed at once (a topic just created is briefly unknown), but never retried
    # for ever either (every batch of the instance would abort behind it)
    err = KafkaError(code)
    assert suspect(err) and not refused_for_good(err)
    assert not suspect(KafkaError(code, fatal=True))
    assert not blame_suspects(SUSPECT_AFTER - 1, [str(err)])
    assert blame_suspects(SUSPECT_AFTER, [str(err)])
    assert not blame_suspects(10 * SUSPECT_AFTER, [])  # no suspect in this abort


def test_a_lasting_suspect_ends_in_a_dead_letter_not_a_standing_stall() -> None:
    # what the engine does with the blamed aborts: the batch is isolated, then the
    # one input whose output keeps failing is dead-lettered, then skipped
    policy = AbortPolicy()
    keys = [("t.commands", 0, i) for i in range(3)]
    policy.aborted(keys, "TOPIC_AUTHORIZATION_FAILED", refused=True)
    policy.aborted(keys, "TOPIC_AUTHORIZATION_FAILED", refused=True)
    assert policy.isolate == 3
    policy.committed([keys[0]])
    policy.committed([keys[1]])
    for _ in range(2):
        policy.aborted([keys[2]], "TOPIC_AUTHORIZATION_FAILED", refused=True)
    assert policy.verdict(keys[2]) is Verdict.DEAD_LETTER
    assert policy.reason(keys[2]) == "TOPIC_AUTHORIZATION_FAILED"
