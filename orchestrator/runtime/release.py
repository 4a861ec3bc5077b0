"""Let go of Kafka clients without waiting on them for ever.

Closing a consumer (``Consumer.close``) and freeing any librdkafka client (its
deallocation calls ``rd_kafka_destroy``) are C calls that check no signals: a
SIGTERM handler, Ctrl-C or a test's timeout cannot break into them, and
librdkafka can block in them for ever when the broker they talked to is gone or
was restarted under them (confluentinc/librdkafka#4519).  A client that lived
through a broker's SIGKILL is let go here instead: closed and freed in a daemon
thread, waited for a bounded time, and left behind (logged) if it does not
finish, so the caller goes on.
"""

from __future__ import annotations

import logging
import threading
from typing import TypeVar

from confluent_kafka import Consumer

__all__ = ["release"]

log = logging.getLogger(__name__)

_C = TypeVar("_C")


def release(clients: list[_C], *, timeout: float = 10.0) -> bool:
    """Close and free the clients in ``clients`` in a daemon thread; wait at most ``timeout``.

    ``clients`` must hold the only references to them: the caller builds the list
    and keeps no other name bound to a client (else it is freed wherever that name
    goes, as before).  The list is emptied.  A consumer is closed first (leaving its
    group); any other client is freed.  Returns whether all of it finished in time.
    """
    owned = clients[:]
    clients.clear()

    def drop() -> None:
        while owned:
            client = owned.pop()
            try:
                if isinstance(client, Consumer):
                    client.close()
            except Exception as exc:  # closed already, or closing failed: freed below
                log.debug("closing a Kafka consumer: %s", exc)
            del client  # the last reference: rd_kafka_destroy runs here, in this thread

    thread = threading.Thread(target=drop, name="sagaline-release", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        log.warning(
            "a Kafka client did not close within %.0f s; left to finish on its own", timeout
        )
        return False
    return True
