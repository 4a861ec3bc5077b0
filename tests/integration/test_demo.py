"""``sagaline demo``, reduced, as separate processes against the test's Kafka and Postgres.

The demo SIGKILLs a worker and the orchestrator mid-flight and restarts
them; the test then checks its JSON verdict: every saga ended as planned,
no side effect ran twice, no LLM call was repeated, the journal audit holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from orchestrator_support import journals
from psycopg import sql

from sagaline.orchestrator.runtime.core import AvroCodec
from sagaline.sagas.digest import DEMO_DIGEST

pytestmark = pytest.mark.integration

SAGALINE = [
    sys.executable,
    "-c",
    "import sys; from sagaline.orchestrator.cli import main; sys.exit(main())",
]


@pytest.fixture
def app_schema(database_url: str, pg_schema: str) -> Iterator[str]:
    name = f"{pg_schema}_app"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def demo_prefix(kafka_admin: AdminClient, topic_prefix: str) -> Iterator[str]:
    prefix = f"{topic_prefix}-demo"
    yield prefix
    topics = [t for t in kafka_admin.list_topics(timeout=10).topics if t.startswith(prefix + ".")]
    if topics:
        for future in kafka_admin.delete_topics(topics, operation_timeout=30).values():
            try:
                future.result(30)
            except Exception:  # cleanup is best effort
                continue


def _run_demo(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [*SAGALINE, "demo", "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=240,
        check=False,
    )
    try:
        document = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"demo printed no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.returncode, document, proc.stderr


def test_demo_survives_crashes_with_clean_audit(
    kafka_bootstrap: str,
    database_url: str,
    pg_schema: str,
    app_schema: str,
    demo_prefix: str,
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": database_url,
    }
    code, result, stderr = _run_demo(
        [
            "--refunds", "4",
            "--research", "2",
            "--enrichments", "3",
            "--workers", "2",
            "--prefix", demo_prefix,
            "--worker-schema", pg_schema,
            "--app-schema", app_schema,
            "--log-dir", str(tmp_path / "logs"),
            "--timeout-s", "150",
        ],
        env,
        tmp_path,
    )  # fmt: skip
    failed = [c for c in result["checks"] if not c["ok"]]
    assert code == 0, f"demo failed: {failed}\n{stderr}"
    assert result["ok"] is True

    # Every saga ended as planned; the plan covers each path of the reference sagas.
    by_action = {(s["kind"], s["action"]): s for s in result["sagas"]}
    assert len(result["sagas"]) == 9
    for saga in result["sagas"]:
        assert saga["status"] == saga["expected"], saga
    assert by_action[("refund", "approve")]["status"] == "completed"
    assert by_action[("refund", "reject")]["status"] == "compensated"
    assert by_action[("refund", "timeout")]["status"] == "compensated"
    assert "timed out" in by_action[("refund", "timeout")]["reason"]
    assert by_action[("refund", "ineligible")]["status"] == "completed"
    assert by_action[("research", "resume")]["status"] == "completed"
    assert by_action[("enrichment", "retried")]["retries"] >= 2
    assert result["summary"]["enrichment"] == {"completed": 2, "compensated": 1}

    # The crash really happened: the orchestrator and worker-1 were started twice.
    assert result["process_starts"]["orchestrator"] == 2
    assert result["process_starts"]["worker-1"] == 2
    assert any("SIGKILL" in e for e in result["events"])

    # The web console ran beside the demo and answered; its password never reached the output.
    assert result["process_starts"]["console"] == 1
    assert f"web console answered at {result['console_url']}" in result["events"]
    password = (tmp_path / ".sagaline" / "console-demo-password").read_text().strip()
    assert len(password) >= 12
    assert password not in json.dumps(result) and password not in stderr
    assert (tmp_path / ".sagaline" / "console-demo-password").stat().st_mode & 0o077 == 0

    checks = {c["name"]: c for c in result["checks"]}
    for name in (
        "outcomes",
        "approver_identity",
        "budget_pause",
        "retries",
        "payments_once",
        "notifications_once",
        "customer_records",
        "leads_once",
        "llm_calls_not_repeated",
        "reports_once",
        "journal_audit",
        "read_model",
        "replay_strict",
        "schedule",
    ):
        assert checks[name]["ok"], checks[name]

    # The digest schedule ran beside them: one digest saga per tick, each audited too.
    entries = journals(kafka_bootstrap, demo_prefix, AvroCodec())
    digests = [k for k in entries if k.startswith(f"{DEMO_DIGEST.name}@")]
    assert digests, "the demo's schedule started no digest"
    assert any("digest sagas" in e for e in result["events"])

    audit = result["audit"]
    assert audit["ok"] is True
    assert audit["sagas"] == 9 + len(digests)
    assert audit["findings"] == []
    assert audit["inbox_rows_checked"] > 0

    # The business tables agree with the verdict, read here independently.
    with psycopg.connect(database_url, autocommit=True) as conn:
        payments = conn.execute(
            sql.SQL("SELECT saga_id, count(*) FROM {}.payments GROUP BY saga_id").format(
                sql.Identifier(app_schema)
            )
        ).fetchall()
        repeated_llm = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM (SELECT idempotency_key FROM {}.llm_calls"
                " GROUP BY idempotency_key HAVING count(*) > 1) d"
            ).format(sql.Identifier(app_schema))
        ).fetchone()
    approved = {s["saga_id"] for s in result["sagas"] if s["action"] == "approve"}
    assert {row[0]: row[1] for row in payments} == dict.fromkeys(approved, 1)
    assert repeated_llm == (0,)


def test_demo_rejects_bad_sizes(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*SAGALINE, "demo", "--refunds", "-1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "must be >= 0" in proc.stderr
