"""The storm suite at CI size: ``chaos.storm`` sagas through 3 orchestrators, 3
workers and 2 relays (real ``sagaline`` subprocesses) on a 3-broker cluster,
under SIGKILL storms of every process kind, a PostgreSQL crash, a broker
SIGKILL and a flood of bad input on every input topic.

It runs the same engine as ``sagaline chaos`` and asserts every invariant of
its JSON report (see :mod:`sagaline.orchestrator.chaos.invariants`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sagaline.orchestrator.chaos.invariants import ZERO
from sagaline.orchestrator.chaos.storm import StormConfig, run_storm
from sagaline.orchestrator.devenv.kafka import LocalKafka
from sagaline.orchestrator.devenv.postgres import LocalPostgres
from sagaline.orchestrator.runtime.signing_runtime import signing_config

pytestmark = [pytest.mark.chaos, pytest.mark.storm, pytest.mark.timeout(900)]

#: CI size: a short storm that still applies every fault kind (SIGKILLs of each process
#: kind, a PostgreSQL crash, a broker SIGKILL and restart, the bad-input flood)
SAGAS = int(os.environ.get("SAGALINE_STORM_SAGAS", "100"))


def test_storm(
    private_kafka_cluster: LocalKafka, private_postgres: LocalPostgres, tmp_path: Path
) -> None:
    config = StormConfig(
        sagas=SAGAS,
        seed=int(os.environ.get("CHAOS_SEED", "0")),
        timeout=600.0,
        sized_rounds=1,
        postgres_down=2.0,
        broker_down=5.0,
    )
    report = run_storm(config, private_kafka_cluster, private_postgres, tmp_path / "logs")
    text = json.dumps(report, indent=1, default=str)
    inv = report["invariants"]
    for name in ZERO:
        assert inv[name] == 0, f"{name} = {inv[name]}:\n{text}"
    assert report["fault_errors"] == [], text
    assert report["failed"] == [] and report["passed"], text
    # every fault kind landed, and the sagas really went both ways
    faults = report["faults"]
    for kind in ("orchestrator", "worker", "relay"):
        assert faults["kills_by_kind"][kind] >= 1, text
    assert faults["postgres_crash"] >= 1 and faults["broker_restart"] >= 1, text
    assert inv["statuses"].get("completed", 0) > 0, text
    assert inv["statuses"].get("compensated", 0) > 0, text
    assert inv["sagas"] == SAGAS
    # the flood: every kind on every input topic, and each bad input accounted for
    assert inv["bad_inputs"] > 0 and inv["dead_lettered"] > 0, text
    assert inv["journaled_ignored"] > 0, text
    assert inv["refused_by_broker"] > 0, text  # records above the size limit, uncompressed
    assert inv["bad_inputs"] == (
        inv["dead_lettered"] + inv["journaled_ignored"] + inv["refused_by_broker"]
    )
    if signing_config().enabled:
        _signed_flood_reaches_its_reasons(inv["dead_letter_error_types"], text)
    assert report["settle_lag"] == 0, text
    assert report["throughput"]["storm"]["per_s"] > 0, text
    rates = report["throughput"]["steps_completed_per_s"]
    assert rates["calm"] > 0 and rates["storm"] > 0, text
    fraction = report["throughput"]["storm_steps_fraction_of_calm"]
    assert fraction == round(rates["storm"] / rates["calm"], 3), text


#: the flood's records whose only fault is their signature, and how each is refused
SIGNATURE_KINDS = {
    "unsigned_start": "Unsigned",
    "start_wrong_signer": "WrongSigner",
    "unsigned_reply": "Unsigned",
    "reply_wrong_signer": "WrongSigner",
    "reply_bad_signature": "BadSignature",
    "unsigned_task": "Unsigned",
    "task_wrong_signer": "WrongSigner",
}


def _signed_flood_reaches_its_reasons(error_types: dict[str, list[str]], text: str) -> None:
    """With signing on: each signature fault is dead-lettered as such, and every other
    (properly signed) bad input for its own reason, never as a signature fault."""
    for kind, error_type in SIGNATURE_KINDS.items():
        assert error_types.get(kind) == [error_type], f"{kind}: {error_types.get(kind)}\n{text}"
    faults = set(SIGNATURE_KINDS.values())
    for kind, found in error_types.items():
        if kind not in SIGNATURE_KINDS:
            assert not faults & set(found), f"{kind} refused as {found}\n{text}"
