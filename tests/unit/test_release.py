"""release(): Kafka clients closed and freed in a daemon thread, with a bounded wait."""

from __future__ import annotations

import threading

from confluent_kafka import Consumer, Producer

from sagaline.orchestrator.runtime.release import release


def test_clients_are_closed_and_freed_off_the_calling_thread() -> None:
    events: list[tuple[str, str]] = []

    def note(what: str) -> None:
        events.append((what, threading.current_thread().name))

    class NotedConsumer(Consumer):
        def close(self) -> None:
            note("consumer closed")
            super().close()

        def __del__(self) -> None:
            note("consumer freed")

    class NotedProducer(Producer):
        def __del__(self) -> None:
            note("producer freed")

    # no broker at this address: nothing ever connects, so nothing may wait on one
    consumer = NotedConsumer({"bootstrap.servers": "127.0.0.1:9", "group.id": "g"})
    producer = NotedProducer({"bootstrap.servers": "127.0.0.1:9"})
    clients: list[object] = [consumer, producer]
    del consumer, producer
    assert release(clients, timeout=30.0)
    assert clients == []
    assert events == [
        ("producer freed", "sagaline-release"),
        ("consumer closed", "sagaline-release"),
        ("consumer freed", "sagaline-release"),
    ]


def test_a_client_that_does_not_finish_in_time_is_left_behind() -> None:
    started, finish = threading.Event(), threading.Event()

    class Slow:
        def __del__(self) -> None:
            started.set()
            finish.wait(30)

    clients: list[object] = [Slow()]
    assert release(clients, timeout=0.2) is False  # the caller goes on
    assert started.wait(5) and clients == []
    finish.set()
