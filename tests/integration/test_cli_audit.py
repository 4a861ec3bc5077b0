"""``sagaline replay | audit | projection run | list | status`` on real Kafka and PostgreSQL.

Commands run in-process through ``sagaline.orchestrator.cli.main.main``; one test runs
the installed ``sagaline`` console script in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from journal_builders import JOURNAL_TOPIC_CONFIG, SagaRun, publish_journal, run_refund

from sagaline.consumers.migrations import migrate
from sagaline.consumers.projections import ProjectionError, get_saga
from sagaline.orchestrator.cli.main import main
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.signing_runtime import reset_signing, signing_config
from sagaline.schemas.events import StepDispatched

pytestmark = pytest.mark.integration

OUTCOMES = ("approved", "rejected", "failed_notify", "waiting")
TESTS_DIR = Path(__file__).resolve().parents[1]


@dataclass
class Setup:
    bootstrap: str
    database_url: str
    schema: str
    names: TopicNames
    runs: dict[str, SagaRun]

    def kafka(self) -> list[str]:
        return ["--bootstrap", self.bootstrap, "--prefix", self.names.prefix]

    def db(self) -> list[str]:
        return ["--database-url", self.database_url, "--db-schema", self.schema]


@pytest.fixture
def setup(
    kafka_bootstrap: str,
    database_url: str,
    topic_prefix: str,
    pg_schema: str,
    create_topics: Callable[..., list[str]],
) -> Setup:
    names = TopicNames(topic_prefix)
    create_topics([names.journal], partitions=2, config=JOURNAL_TOPIC_CONFIG)
    runs = {o: run_refund(f"{topic_prefix}-{o}", o) for o in OUTCOMES}
    entries = [e for run in runs.values() for e in run.entries]
    publish_journal(kafka_bootstrap, names.journal, entries, transactional_id=f"{topic_prefix}-c")
    return Setup(kafka_bootstrap, database_url, pg_schema, names, runs)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_replay_text_json_and_unknown_saga(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["replay", *setup.kafka()], capsys)
    assert code == 0
    assert f"saga {setup.runs['approved'].saga_id}" in out
    assert "manager_ok (approval): approved by manager@example.com" in out
    assert "compensations (in order):" in out
    assert f"{len(OUTCOMES)} saga(s)" in out

    saga_id = setup.runs["failed_notify"].saga_id
    code, out, _ = run_cli(["replay", *setup.kafka(), "--saga-id", saga_id, "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert [s["saga_id"] for s in data["sagas"]] == [saga_id]
    assert [c["step"] for c in data["sagas"][0]["compensations"]] == [
        "reverse_payment",
        "update_record",
    ]

    code, out, err = run_cli(["replay", *setup.kafka(), "--saga-id", "no-such-saga"], capsys)
    assert code == 2
    assert "unknown saga id 'no-such-saga'" in err


def test_replay_strict_as_a_deploy_gate(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        ["replay", *setup.kafka(), "--strict", "--sagas", "journal_builders:REGISTRY", "--json"],
        capsys,
    )
    assert code == 0, out
    assert json.loads(out)["divergences"] == []

    code, out, _ = run_cli(
        ["replay", *setup.kafka(), "--strict", "--sagas", "journal_builders:CHANGED"], capsys
    )
    assert code == 1
    assert "DIVERGENCE saga" in out
    assert "WaitOpened.timeout_at" in out
    assert "input StepSucceeded" in out

    code, _, err = run_cli(["replay", *setup.kafka(), "--strict", "--sagas", "nope"], capsys)
    assert code == 2
    assert "module:attribute" in err


def test_bad_input_is_rejected_with_usage_errors(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["replay", *setup.kafka(), "--since", "last tuesday"])
    assert exc.value.code == 2
    assert "--since wants an ISO 8601 time" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["list", *setup.db(), "--status", "exploded"])
    code, _, err = run_cli(["replay", "--bootstrap", setup.bootstrap, "--prefix", "t-none"], capsys)
    assert code == 2
    assert "journal topic 't-none.journal' does not exist" in err


def test_audit_clean_inbox_and_tampered(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    migrate(setup.database_url, setup.schema)  # the worker inbox table
    code, out, _ = run_cli(["audit", *setup.kafka(), *setup.db(), "--json"], capsys)
    assert code == 0, out
    report = json.loads(out)
    assert report["ok"] is True
    assert report["inbox_rows_checked"] == 0
    assert report["statuses"] == {"completed": 1, "compensated": 2, "in flight": 1}

    # the worker inbox executed a key the journal never dispatched
    run = setup.runs["approved"]
    keys = [
        e.idempotency_key for x in run.entries for e in x.events if isinstance(e, StepDispatched)
    ]
    with psycopg.connect(setup.database_url, autocommit=True) as conn:
        for key in [*keys, "stray-key"]:
            conn.execute(
                f"INSERT INTO {setup.schema}.inbox"
                " (idempotency_key, saga_id, saga_type, kind, step, attempt, task_id, outcome)"
                " VALUES (%s, %s, 'test.refund', 'step', 'notify', 1, %s, 'succeeded')",
                (key, run.saga_id, key),
            )
    code, out, _ = run_cli(["audit", *setup.kafka(), *setup.db()], capsys)
    assert code == 1
    assert "[side_effects]" in out and "(key stray-key), which the journal never dispatched" in out
    code, out, _ = run_cli(["audit", *setup.kafka(), "--no-inbox"], capsys)
    assert code == 0, out
    assert "audit passed" in out

    # an edited entry on the topic: the approver's name changed after the fact
    other = run_refund(f"{setup.names.prefix}-forged", "approved")
    signal_entry = other.entries[3]
    accepted = signal_entry.events[0].model_copy(update={"by": "mallory@example.com"})
    tampered = list(other.entries)
    tampered[3] = signal_entry.model_copy(update={"events": [accepted, *signal_entry.events[1:]]})
    publish_journal(setup.bootstrap, setup.names.journal, tampered, transactional_id="forger")
    code, out, _ = run_cli(
        ["audit", *setup.kafka(), "--no-inbox", "--saga-id", other.saga_id, "--json"], capsys
    )
    assert code == 1
    findings = json.loads(out)["findings"]
    assert [(f["check"], f["seq"]) for f in findings] == [("chain", 4)]
    assert "hash does not match its content" in findings[0]["message"]

    code, _, err = run_cli(["audit", *setup.kafka(), "--saga-id", "nobody"], capsys)
    assert code == 2 and "unknown saga id 'nobody'" in err


def test_audit_reports_journal_entries_not_signed_by_the_orchestrator(
    setup: Setup, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A well-formed entry (valid chain) written with another role's key, or with none,
    is a signature finding; the genuine entries pass."""
    assert signing_config().enabled  # the test session signs (SAGALINE_TEST_SIGNING)
    forged = run_refund(f"{setup.names.prefix}-by-worker", "approved")
    publish_journal(
        setup.bootstrap, setup.names.journal, forged.entries, transactional_id="w", signer="worker"
    )
    bare = run_refund(f"{setup.names.prefix}-unsigned", "approved")
    publish_journal(
        setup.bootstrap, setup.names.journal, bare.entries[:2], transactional_id="u", signer=None
    )
    code, out, _ = run_cli(["audit", *setup.kafka(), "--no-inbox", "--json"], capsys)
    assert code == 1, out
    report = json.loads(out)
    assert report["signatures_checked"] == report["entries"] > len(forged.entries)
    assert report["checks"]["signature"]["failures"] == len(forged.entries) + 2
    found = {(f["saga_id"], f["seq"], f["message"].split(":")[0]) for f in report["findings"]}
    assert found == {(forged.saga_id, e.seq, "WrongSigner") for e in forged.entries} | {
        (bare.saga_id, e.seq, "Unsigned") for e in bare.entries[:2]
    }
    assert all(
        "'worker'" in f["message"] for f in report["findings"] if f["saga_id"] == forged.saga_id
    )
    # one saga: only its findings; the text report names the check
    code, out, _ = run_cli(
        ["audit", *setup.kafka(), "--no-inbox", "--saga-id", setup.runs["approved"].saga_id],
        capsys,
    )
    assert code == 0 and "ok   signature" in out and "audit passed" in out, out
    code, out, _ = run_cli(["audit", *setup.kafka(), "--no-inbox"], capsys)
    assert code == 1 and "FAIL signature" in out and f"[signature] saga {bare.saga_id} seq 1" in out
    # asked not to check, or with signing off: the report says so
    code, out, _ = run_cli(["audit", *setup.kafka(), "--no-inbox", "--no-signatures"], capsys)
    assert code == 0 and "journal signatures not checked: --no-signatures" in out, out
    monkeypatch.setenv("SAGALINE_SIGNING", "false")
    reset_signing()
    try:
        code, out, _ = run_cli(["audit", *setup.kafka(), "--no-inbox", "--json"], capsys)
    finally:
        monkeypatch.undo()
        reset_signing()
    assert code == 0 and json.loads(out)["signatures_checked"] is None, out


def test_projection_list_and_status(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["projection", "run", *setup.kafka(), *setup.db(), "--until-caught-up"]
    code, out, _ = run_cli(
        [*args, "--name", f"{setup.names.prefix}-p", "--timeout", "90", "--json"], capsys
    )
    assert code == 0
    assert json.loads(out)["applied"] == sum(len(r.entries) for r in setup.runs.values())

    code, out, _ = run_cli(["list", *setup.db(), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["count"] == len(OUTCOMES)
    code, out, _ = run_cli(
        ["list", *setup.db(), "--type", "test.refund", "--status", "waiting"], capsys
    )
    assert code == 0
    assert setup.runs["waiting"].saga_id in out and "waiting for manager_ok" in out
    assert setup.runs["approved"].saga_id not in out

    saga_id = setup.runs["failed_notify"].saga_id
    code, out, _ = run_cli(
        ["status", saga_id, *setup.db(), "--from", "read-model", "--json"], capsys
    )
    assert code == 0
    status = json.loads(out)
    assert status["status"] == "compensated"
    assert [t["seq"] for t in status["timeline"]] == list(range(1, 9))

    code, _, err = run_cli(["status", "missing-saga", *setup.db(), "--from", "read-model"], capsys)
    assert code == 2
    assert "unknown saga id 'missing-saga'" in err

    # auto (the default): the state topic (absent here), then the read model, which knows it
    code, out, _ = run_cli(["status", saga_id, *setup.kafka(), *setup.db(), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["last_seq"] == 8
    # ... and a saga neither knows: exit 5, both reasons on one line
    code, _, err = run_cli(["status", "missing-saga", *setup.kafka(), *setup.db()], capsys)
    assert code == 5
    assert "unknown saga id 'missing-saga': not on the state topic (" in err
    assert "nor in the read model (" in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_runs_the_audit(setup: Setup) -> None:
    script = Path(sys.executable).with_name("sagaline")
    env = dict(os.environ, PYTHONPATH=str(TESTS_DIR))
    done = subprocess.run(
        [str(script), "audit", *setup.kafka(), "--no-inbox", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sagas"] == len(OUTCOMES)


def test_projection_process_stops_cleanly_on_sigterm(setup: Setup) -> None:
    script = Path(sys.executable).with_name("sagaline")
    proc = subprocess.Popen(
        [
            str(script),
            "projection",
            "run",
            *setup.kafka(),
            *setup.db(),
            "--name",
            f"{setup.names.prefix}-long",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        saga_id = setup.runs["approved"].saga_id
        deadline = time.monotonic() + 90
        row = None
        while row is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            try:
                row = get_saga(setup.database_url, saga_id, schema=setup.schema)
            except ProjectionError:
                row = None  # tables not created yet
        assert row is not None and row.status == "completed"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["applied"] == sum(len(r.entries) for r in setup.runs.values())
