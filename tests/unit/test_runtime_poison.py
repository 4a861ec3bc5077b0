"""Issue 17: dead letters always fit, the abort fallback terminates, misrouting is caught."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from sagaline.orchestrator.runtime.errors import InputRejected
from sagaline.orchestrator.runtime.layout import wrong_partition
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.poison import AbortPolicy, Verdict
from sagaline.schemas.codec import default_codec
from sagaline.schemas.deadletter import (
    MAX_ORIGINAL_HEADER_BYTES,
    MAX_ORIGINAL_KEY_BYTES,
    MAX_ORIGINAL_VALUE_BYTES,
    DeadLetter,
    bounded,
    dead_letter_for,
)

pytestmark = pytest.mark.unit

AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("size", [999_900, 5 * 1024 * 1024])
def test_a_dead_letter_of_any_original_fits(size: int) -> None:
    value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    headers = [(f"h{i}", b"v" * 1000) for i in range(40)]
    key = b"k" * 5000
    letter = dead_letter_for("t.commands", 2, 17, key, value, headers, "bad", "orch", AT)
    encoded = default_codec().encode(letter)
    assert len(encoded) < 100_000  # far below any topic's 1 MB limit
    assert letter.truncated
    assert letter.value == value[:MAX_ORIGINAL_VALUE_BYTES]
    assert letter.value_length == size
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert letter.key == key[:MAX_ORIGINAL_KEY_BYTES]
    assert sum(len(k) + len(v) for k, v in letter.headers.items()) <= MAX_ORIGINAL_HEADER_BYTES
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "t.commands",
        2,
        17,
    )
    decoded = default_codec().decode(encoded, (DeadLetter,))
    assert decoded == letter


def test_a_small_original_is_kept_whole() -> None:
    letter = dead_letter_for("t", 0, 1, b"k", b"v" * 100, {"a": "b"}, "bad", "orch", AT)
    assert not letter.truncated
    assert letter.value == b"v" * 100 and letter.headers == {"a": b"b"}
    assert letter.value_length is None and letter.value_sha256 is None
    assert bounded(letter) is letter


def test_an_input_that_never_commits_is_dead_lettered_then_skipped() -> None:
    policy = AbortPolicy()
    key = ("t.commands", 0, 5)
    seen = []
    for _ in range(6):
        verdict = policy.verdict(key)
        seen.append(verdict)
        if verdict is Verdict.SKIP:
            policy.committed([key])  # an offset-only transaction always terminates
            break
        policy.aborted([key], "MSG_SIZE_TOO_LARGE", refused=True)
    assert seen == [Verdict.DECIDE, Verdict.DECIDE, Verdict.DEAD_LETTER, Verdict.SKIP]
    assert policy.verdict(key) is Verdict.DECIDE  # committed: forgotten
    assert policy.aborts == 0


def test_a_batch_that_aborts_twice_is_isolated_and_a_commit_resets() -> None:
    policy = AbortPolicy()
    keys = [("t", 0, i) for i in range(3)]
    policy.aborted(keys, "x", refused=True)
    assert policy.isolate == 0
    policy.aborted(keys, "x", refused=True)
    assert policy.isolate == 3
    assert all(policy.verdict(k) is Verdict.DECIDE for k in keys)  # not blamed as a group
    policy.committed(keys[:1])
    assert (policy.isolate, policy.aborts) == (2, 0)
    policy.aborted([keys[1]], "refused", refused=True)
    policy.aborted([keys[1]], "refused", refused=True)
    assert policy.reason(keys[1]) == "refused"
    policy.forget(lambda k: k == keys[1])
    assert policy.verdict(keys[1]) is Verdict.DECIDE


def test_wrong_partition_is_rejected_with_the_right_one() -> None:
    saga = "saga-42"
    right = partition_for(saga, 6)
    wrong_partition(saga, "t.commands", right, 6)
    with pytest.raises(InputRejected) as info:
        wrong_partition(saga, "t.commands", (right + 1) % 6, 6)
    assert info.value.error_type == "WrongPartition"
    assert f"belongs to partition {right} of t.commands" in info.value.reason
