"""``sagaline bench signing``: CPU of one Ed25519 signature and one verification.

The load-robust figure of what signing adds per record (docs/security.md,
"Cost"): process CPU time (``time.process_time``), not wall clock, of signing
and verifying real records (a ``StartSaga`` and a ``StepSucceeded`` with a
~430-byte payload, Avro-encoded) with a fresh key and keyring, in a temporary
directory.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sagaline.orchestrator.runtime.signing import (
    Keyring,
    Signer,
    create_key,
    load_signer,
)
from sagaline.schemas.base import Envelope, Payload
from sagaline.schemas.codec import default_codec
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.payload import payload_sha256
from sagaline.schemas.replies import StepSucceeded

__all__ = ["run"]


def _records() -> dict[str, tuple[bytes, bytes]]:
    """``{name: (key, encoded value)}`` of the records timed (a 5-step saga's input)."""
    codec = default_codec()
    saga_id = "bench-signing-1"
    envelope = Envelope(
        message_id="m-1", saga_id=saga_id, saga_type="bench", occurred_at=datetime.now(UTC)
    )
    data = Payload(type_name="bench.Order", data=b'{"amount": 1234, "note": "' + b"x" * 400 + b'"}')
    start = StartSaga(envelope=envelope, data=data, input_sha256=payload_sha256(data))
    reply = StepSucceeded(
        envelope=envelope,
        step="charge",
        attempt=1,
        idempotency_key=f"{saga_id}/charge",
        task_id=f"{saga_id}/charge/1/1",
        result=data,
    )
    key = saga_id.encode()
    return {"start_saga": (key, codec.encode(start)), "step_succeeded": (key, codec.encode(reply))}


def _cpu_us(call: Callable[[], object], seconds: float) -> tuple[float, int]:
    """CPU microseconds per ``call()`` over about ``seconds`` of CPU; and how many."""
    n, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        for _ in range(50):
            call()
        n += 50
    return (time.process_time() - start) * 1e6 / n, n


def _figure(
    signer: Signer, ring: Keyring, key: bytes, value: bytes, seconds: float
) -> dict[str, Any]:
    topic = "sagaline.commands"
    headers = signer.headers(topic, key, value)
    sign_us, signs = _cpu_us(lambda: signer.headers(topic, key, value), seconds)
    verify_us, verifies = _cpu_us(lambda: ring.verify(topic, key, value, headers), seconds)
    return {
        "value_bytes": len(value),
        "sign_cpu_us": round(sign_us, 1),
        "verify_cpu_us": round(verify_us, 1),
        "signs": signs,
        "verifies": verifies,
    }


def run(seconds: float = 1.0) -> dict[str, Any]:
    """Sign and verify each record for about ``seconds`` of CPU each."""
    with tempfile.TemporaryDirectory(prefix="sagaline-bench-signing-") as tmp:
        keys = Path(tmp) / "keys"
        path, _, _ = create_key(keys, "orchestrator")
        signer, ring = load_signer(path, "orchestrator"), Keyring.load(keys)
        figures = {
            name: _figure(signer, ring, key, value, seconds)
            for name, (key, value) in _records().items()
        }
    return {
        "benchmark": "Ed25519 sign and verify per record (process CPU time)",
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "records": figures,
    }
