"""A private Kafka and PostgreSQL for one benchmark run, secured or not.

``sagaline bench e2e --private-stack`` measures the cost of security
(docs/security.md, "Cost"): it starts its own single-broker Kafka and
PostgreSQL in a temporary directory (as the test session does), with
TLS + SASL/SCRAM + ACLs + scram-sha-256 passwords unless ``secured`` is false,
makes a key per role and turns Ed25519 signing on or off, exports the
settings for itself and the processes it starts, and removes everything at
the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sagaline.orchestrator.devenv.provision import (
    DOCKER_SWITCH_ENV,
    SECURITY_SWITCH_ENV,
    SessionInfra,
)
from sagaline.orchestrator.runtime.signing import ensure_role_keys
from sagaline.orchestrator.runtime.signing_runtime import reset_signing

__all__ = ["private_stack"]

#: the variables a private stack sets (the previous values come back afterwards)
_SETTINGS = (
    "SAGALINE_KAFKA_SECURITY_PROTOCOL",
    "SAGALINE_KAFKA_CA",
    "SAGALINE_KAFKA_CREDENTIALS",
    "SAGALINE_KAFKA_USER",
    "SAGALINE_KAFKA_PASSWORD",
    "SAGALINE_KEYS_DIR",
    "SAGALINE_SIGNING",
    "SAGALINE_SIGNER",
    "SAGALINE_SIGNING_KEY",
)


@contextmanager
def private_stack(*, secured: bool, signing: bool) -> Iterator[tuple[str, str]]:
    """``(bootstrap servers, database URL)`` of a fresh stack, its settings exported."""
    saved = {name: os.environ.get(name) for name in _SETTINGS}
    infra = SessionInfra({SECURITY_SWITCH_ENV: "1" if secured else "0", DOCKER_SWITCH_ENV: "0"})
    keys = Path(tempfile.mkdtemp(prefix="sagaline-bench-keys-"))
    try:
        infra.prepare(kafka=True, postgres=True)
        bootstrap, dsn = infra.kafka_bootstrap(), infra.database_url()
        for name in _SETTINGS:
            os.environ.pop(name, None)
        os.environ["SAGALINE_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
        os.environ.update(infra.security_env())
        os.environ["SAGALINE_KEYS_DIR"] = str(ensure_role_keys(keys / "keys"))
        os.environ["SAGALINE_SIGNING"] = "true" if signing else "false"
        reset_signing()
        yield bootstrap, dsn
    finally:
        infra.close()
        shutil.rmtree(keys, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_signing()
