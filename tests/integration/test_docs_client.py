"""docs/client.md runs as written: its bash and python blocks, in order, in one shell.

Same runner as the tutorial's (``test_tutorial.build_script``), against the
session's real Kafka and a fresh PostgreSQL database, with a topic prefix
of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from test_tutorial import build_script, tutorial_blocks

pytestmark = pytest.mark.integration

PAGE = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def test_client_page_has_no_skipped_block() -> None:
    blocks = tutorial_blocks(PAGE.read_text())
    assert not [b for b in blocks if b.skip]
    assert {b.lang for b in blocks} == {"bash", "python"}


def test_client_page_runs_as_written(
    kafka_bootstrap: str,
    fresh_database_url: str,
    topic_prefix: str,
    kafka_admin: AdminClient,
    tmp_path: Path,
) -> None:
    script = build_script(tutorial_blocks(PAGE.read_text()), tmp_path)
    bin_dir = str(Path(sys.executable).parent)
    prefix = f"{topic_prefix}-client"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": fresh_database_url,
        "SAGALINE_TOPIC_PREFIX": prefix,
        "SAGALINE_DEV_ENV": str(tmp_path / "no-dev.env"),
    }
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"docs/client.md did not finish in 240 s:\n{output}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        topics = [t for t in kafka_admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        if topics:
            for future in kafka_admin.delete_topics(topics, operation_timeout=30).values():
                with contextlib.suppress(Exception):
                    future.result(30)
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in tmp_path.glob("*.log")
    )
    assert proc.returncode == 0, (
        f"docs/client.md failed (exit {proc.returncode}):\n{output}\n{logs}"
    )

    assert "started: greet-ada running" in output
    assert "orchestrator: accepted (SagaStarted" in output
    assert "greet-ada waits for manager until" in output
    assert "approve greet-ada: accepted" in output
    assert "greet-ada: completed" in output
    assert "greet-bob did not complete (exit code 1)" in output
    assert any(line.split() == ["write_card", "compensated"] for line in output.splitlines())
    assert "unknown saga 'greet-nobody'" in output
    assert "approve of an unknown saga: exit code 5" in output
    assert "refused before sending: the data model Local is defined in __main__" in output
    assert "Kafka at 127.0.0.1:9 did not answer within 2 s; nothing was sent" in output
    assert "Traceback" not in output
