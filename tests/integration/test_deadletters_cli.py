"""``sagaline deadletters list | replay`` on real Kafka.

The originals are real commands (the client's, signed as ``client`` when signing is
on) read back from the commands topic; their dead letters are built and written as
the orchestrator's refusal path does (``dead_letter_from_message``, signed as
``orchestrator``).  A replay must put the same key, value and headers back on the
commands topic, confirmed by Kafka.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, TopicPartition
from orchestrator_support import read_committed

from sagaline.orchestrator.cli.main import main
from sagaline.orchestrator.client.deadletters import read_dead_letters
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.deadletter import dead_letter_from_message
from sagaline.orchestrator.runtime.kafka_config import client_producer_config, reader_config
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer, keyring, signing_config
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.base import Envelope
from sagaline.schemas.codec import default_codec
from sagaline.schemas.commands import SignalSaga
from sagaline.schemas.deadletter import dead_letter_for

pytestmark = pytest.mark.integration


class WrongPartition(Exception):
    """The refusal's class names the letter's error type."""


class ReplyTooLarge(Exception):
    """The refusal's class names the letter's error type."""


def _raw_messages(bootstrap: str, topic: str, partition: int) -> list[object]:
    reader = Consumer(reader_config(bootstrap, f"raw-{topic}"))
    reader.assign([TopicPartition(topic, partition, 0)])
    found: list[object] = []
    try:
        for _ in range(50):
            found.extend(m for m in reader.consume(100, 0.2) if m.error() is None)
            if found:
                break
    finally:
        reader.close()
    return found


@pytest.fixture
def names(kafka_bootstrap: str, topic_prefix: str) -> TopicNames:
    names = TopicNames(topic_prefix)
    ensure_topics(kafka_bootstrap, names, TopicLayout(partitions=3))
    return names


def test_list_filters_and_replay_puts_the_original_back(
    kafka_bootstrap: str, names: TopicNames, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = ["--bootstrap", kafka_bootstrap, "--prefix", names.prefix]
    codec = default_codec()
    # an original command, as the client writes it (signed as the client when signing is on)
    saga = "dl-saga-1"
    part = partition_for(saga, 3)
    signal = SignalSaga(
        envelope=Envelope(
            message_id="m-1",
            saga_id=saga,
            saga_type="refund",
            saga_version=1,
            occurred_at=datetime.now(UTC),
        ),
        name="manager_ok",
        by="ada",
    )
    client = SignedProducer(client_producer_config(kafka_bootstrap), "client")
    client.produce(names.commands, key=saga.encode(), value=codec.encode(signal), partition=part)
    client.flush(30)
    [original] = _raw_messages(kafka_bootstrap, names.commands, part)

    # three dead letters, written as the orchestrator writes them
    wrong_partition = (partition_for("dl-saga-2", 3) + 1) % 3
    letters = [
        dead_letter_from_message(
            original,  # type: ignore[arg-type]
            reason="no saga dl-saga-1",
            error_type="UnknownSaga",
            rejected_by="orchestrator",
            now=datetime.now(UTC),
        ),
        dead_letter_for(
            names.commands,
            wrong_partition,
            7,
            b"dl-saga-2",
            b"\x00junk",
            None,
            WrongPartition("belongs to another partition"),
            "orchestrator",
            datetime.now(UTC),
        ),
        dead_letter_for(
            names.replies,
            0,
            9,
            b"dl-saga-3",
            b"x" * 70_000,
            None,
            ReplyTooLarge("70000 bytes above the limit"),
            "worker",
            datetime.now(UTC),
        ),
        # a due timer's input the orchestrator refused: made in-process, no topic record
        dead_letter_for(
            f"{names.state}#timers",
            0,
            -1,
            b"dl-saga-4",
            b"timer",
            None,
            "a timer for a finished saga",
            "orchestrator",
            datetime.now(UTC),
        ),
        # from a topic deleted since: a replay must not create it again
        dead_letter_for(
            f"{names.prefix}.gone",
            0,
            3,
            b"dl-saga-5",
            b"old",
            None,
            "from a topic deleted since",
            "orchestrator",
            datetime.now(UTC),
        ),
    ]
    orchestrator = SignedProducer(client_producer_config(kafka_bootstrap), "orchestrator")
    for letter in letters:
        orchestrator.produce(names.deadletter, key=letter.key, value=codec.encode(letter))
    orchestrator.flush(30)

    assert main(["deadletters", "list", *conn, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["count"] == 5
    sagas = ["dl-saga-1", "dl-saga-2", "dl-saga-3", "dl-saga-4", "dl-saga-5"]
    assert [x["saga_id"] for x in listed["letters"]] == sagas
    first = listed["letters"][0]
    assert first["error_type"] == "UnknownSaga" and first["rejected_by"] == "orchestrator"
    assert first["source"] == f"{names.commands}[{part}]@{original.offset()}"  # type: ignore[attr-defined]
    assert listed["letters"][2]["truncated"] is True
    assert listed["letters"][2]["value_bytes"] == 70_000

    assert main(["deadletters", "list", *conn, "--saga-id", "dl-saga-2"]) == 0
    out = capsys.readouterr().out
    assert (
        "dl-saga-2" in out
        and "dl-saga-1" not in out
        and out.strip().endswith(f"1 dead letter(s) in {names.deadletter}")
    )
    assert main(["deadletters", "list", *conn, "--type", "ReplyTooLarge"]) == 0
    assert "(original cut to fit)" in capsys.readouterr().out
    assert main(["deadletters", "list", *conn, "--limit", "2", "--json"]) == 0
    newest = json.loads(capsys.readouterr().out)
    assert newest["count"] == 5 and [x["saga_id"] for x in newest["letters"]] == sagas[3:]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert main(["deadletters", "list", *conn, "--since", later, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 0

    # replay the first: the same key, value and headers back on the commands topic
    offsets = {x["saga_id"]: x["offset"] for x in listed["letters"]}
    assert main(["deadletters", "replay", str(offsets["dl-saga-1"]), *conn, "--json"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert (stored["topic"], stored["partition"]) == (names.commands, part)
    again = [
        r
        for r in read_committed(kafka_bootstrap, names.commands)
        if (r.partition, r.offset) == (part, stored["offset"])
    ]
    assert len(again) == 1
    assert again[0].key == saga and again[0].value == original.value()  # type: ignore[attr-defined]
    assert again[0].headers == dict(original.headers() or [])  # type: ignore[attr-defined]
    if signing_config().enabled:  # still the client's signature, verifiable as such
        headers = list(again[0].headers.items())
        assert keyring().verify(names.commands, saga.encode(), again[0].value, headers) == "client"

    # a WrongPartition letter goes where its key says with --by-key
    assert main(["deadletters", "replay", str(offsets["dl-saga-2"]), *conn, "--by-key"]) == 0
    text = capsys.readouterr().out
    by_key = partition_for("dl-saga-2", 3)
    assert by_key != wrong_partition and f"to {names.commands}[{by_key}]@" in text
    moved = [r for r in read_committed(kafka_bootstrap, names.commands) if r.key == "dl-saga-2"]
    assert [(r.partition, r.value) for r in moved] == [(by_key, b"\x00junk")]

    # refused, one line each, nothing sent
    assert main(["deadletters", "replay", str(offsets["dl-saga-3"]), *conn]) == 2
    err = capsys.readouterr().err
    assert (
        "holds only part of its original (70000 bytes" in err and len(err.strip().splitlines()) == 1
    )
    assert main(["deadletters", "replay", str(offsets["dl-saga-4"]), *conn]) == 2
    assert "an input the orchestrator made itself" in capsys.readouterr().err
    assert main(["deadletters", "replay", str(offsets["dl-saga-5"]), *conn]) == 2
    assert (
        f"topic '{names.prefix}.gone' does not exist; nothing was sent" in capsys.readouterr().err
    )
    lister = Consumer(reader_config(kafka_bootstrap, "list"))
    try:
        topics = lister.list_topics(timeout=10).topics
    finally:
        lister.close()
    assert f"{names.prefix}.gone" not in topics  # not auto-created by the attempt
    assert main(["deadletters", "replay", "999", *conn]) == 2
    assert f"no dead letter at {names.deadletter}[0]@999" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["deadletters", "replay", "minus-one", *conn])
    assert exc.value.code == 2
    assert "an offset is a whole number" in capsys.readouterr().err
    assert len(read_dead_letters(kafka_bootstrap, names)) == 5  # nothing was added or lost
    assert main(["deadletters", "list", "--bootstrap", kafka_bootstrap, "--prefix", "t-none"]) == 2
    assert "topic 't-none.deadletter' does not exist" in capsys.readouterr().err
