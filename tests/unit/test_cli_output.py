"""What the command line shows people: aligned tables, progress, the status of a saga."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from sagaline.orchestrator.cli.progress_view import RecordProgress, TaskProgress
from sagaline.orchestrator.cli.status_view import summary, text
from sagaline.orchestrator.demo.checks import SagaOutcome
from sagaline.orchestrator.demo.report import outcome_table
from sagaline.orchestrator.devenv.progress import report
from sagaline.schemas.base import Payload, Usage
from sagaline.schemas.state import SagaState, StepState, WaitState

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _outcome(saga_id: str, calls: int, tokens: int, reason: str | None) -> SagaOutcome:
    return SagaOutcome(
        saga_id, "refund", "approved", "completed", "completed", reason, calls, tokens, 0
    )


def test_demo_table_puts_each_number_under_its_own_heading() -> None:
    table = outcome_table(
        [_outcome("refund-1", 3, 1234, None), _outcome("research-22", 12, 98765, "budget")]
    )
    header, *rows = table.splitlines()
    calls_end = header.index("LLM calls") + len("LLM calls")
    tokens_end = header.index("tokens") + len("tokens")
    assert calls_end < header.index("tokens")
    for row, (calls, tokens) in zip(rows, [("3", "1234"), ("12", "98765")], strict=True):
        assert row[calls_end - len(calls) : calls_end] == calls, table
        assert row[tokens_end - len(tokens) : tokens_end] == tokens, table


def test_task_progress_prints_plain_lines_off_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TaskProgress(Console(file=io.StringIO())):
        report("maven", "downloaded 1 files (0.1 MB) into ~/.m2/repository")
        report("maven", "downloaded 2 files (0.2 MB) into ~/.m2/repository")  # throttled
        report("maven", "57 jars copied", done=True)
    report("maven", "nobody listens any more")
    assert capsys.readouterr().err.splitlines() == [
        "maven: downloaded 1 files (0.1 MB) into ~/.m2/repository",
        "maven: 57 jars copied",
    ]


def test_task_progress_draws_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with TaskProgress(console):
        report("kafka", "started 1 node(s); waiting for 127.0.0.1:9092")
        report("kafka", "ready at 127.0.0.1:9092 in 3.2 s", done=True)
    assert "ready at 127.0.0.1:9092 in 3.2 s" in out.getvalue()


def test_record_progress_only_on_a_terminal() -> None:
    out = io.StringIO()
    with RecordProgress("auditing", enabled=True, console=Console(file=out)) as quiet:
        quiet.callback(10, 100)
    assert out.getvalue() == ""
    shown = io.StringIO()
    console = Console(file=shown, force_terminal=True, width=100)
    with RecordProgress("auditing", enabled=True, console=console) as bar:
        bar.callback(50, 100)
    assert "auditing" in shown.getvalue()


def _state() -> SagaState:
    return SagaState(
        saga_id="welcome-bob",
        saga_type="welcome",
        saga_version=1,
        status="compensated",
        data=Payload(type_name="x.Welcome", version=1, content_type="application/json", data=b"{}"),
        steps={
            "grant_credit": StepState(
                name="grant_credit",
                status="succeeded",
                attempt=1,
                compensable=True,
                compensation_status="compensated",
            ),
            "send_note": StepState(
                name="send_note",
                status="succeeded",
                compensable=True,
                compensation_status="failed",
                last_error="smtp down",
            ),
        },
        waits=[
            WaitState(
                name="manager",
                kind="approval",
                opened_at=NOW,
                timeout_at=NOW + timedelta(days=2),
            )
        ],
        usage=Usage(llm_calls=2, tokens_in=100, tokens_out=20),
        budget_exceeded=["tokens"],
        started_at=NOW,
        updated_at=NOW,
        outcome_reason="rejected by grace",
        input_sha256="0" * 64,
    )


def test_status_shows_compensation_per_step_waits_and_budgets() -> None:
    state = _state()
    lines = text(state).splitlines()
    assert lines[0] == "welcome-bob  [welcome v1]  compensated"
    assert "    grant_credit  compensated" in lines
    assert "    send_note     compensation failed  (smtp down)" in lines
    assert "  waiting for: manager (approval; deadline 2026-12-02T12:00:00+00:00)" in lines
    assert any(
        "llm calls 2, tokens 100 in / 20 out" in line and "exceeded: tokens" in line
        for line in lines
    )
    doc = summary(state)
    assert doc["steps"]["grant_credit"]["status"] == "compensated"
    assert doc["steps"]["grant_credit"]["forward_status"] == "succeeded"
    assert doc["steps"]["send_note"]["status"] == "compensation failed"
    assert doc["waits"] == [
        {
            "name": "manager",
            "kind": "approval",
            "opened_at": NOW.isoformat(),
            "deadline": (NOW + timedelta(days=2)).isoformat(),
        }
    ]
    assert doc["budgets"]["exceeded"] == ["tokens"]


def test_maven_download_lines_become_a_count_of_files_and_bytes() -> None:
    from sagaline.orchestrator.devenv.kafka_dist import _MavenCounter
    from sagaline.orchestrator.devenv.progress import reporting, run_streaming

    script = (
        "echo '[INFO] Scanning for projects...'; "
        "echo 'Downloaded from central: https://repo/a.jar (1.5 MB at 2.0 MB/s)'; "
        "echo 'Downloaded from central: https://repo/a.pom (500 B at 1.0 kB/s)'"
    )
    seen: list[tuple[str, str]] = []
    with reporting(lambda task, message, done: seen.append((task, message))):
        code, tail = run_streaming(["sh", "-c", script], _MavenCounter())
    assert code == 0
    assert tail[0] == "[INFO] Scanning for projects..."
    assert seen == [
        ("maven", "downloaded 1 files (1.5 MB) into ~/.m2/repository"),
        ("maven", "downloaded 2 files (1.5 MB) into ~/.m2/repository"),
    ]


def test_demo_report_names_the_command_as_typed_here() -> None:
    from sagaline.orchestrator.demo.checks import Check
    from sagaline.orchestrator.demo.run import DemoResult

    result = DemoResult(
        run_id="r1",
        prefix="demo-r1",
        app_schema="app",
        worker_schema="work",
        outcomes=[_outcome("refund-1", 3, 1234, None)],
        checks=[Check("outcomes", True, "1 of 1 as planned")],
        events=["killed worker-1"],
        log_dir="/tmp/logs",
    )
    text = result.render(".venv/bin/sagaline")
    assert "  .venv/bin/sagaline replay --prefix demo-r1" in text
    assert "  .venv/bin/sagaline list --db-schema work --type refund_demo" in text
    assert "LLM calls" in text
    assert "  ok   outcomes  1 of 1 as planned" in text
